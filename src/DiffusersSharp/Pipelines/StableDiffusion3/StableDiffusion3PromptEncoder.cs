using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>Prompt embeddings as the SD3 transformer takes them.</summary>
/// <param name="PromptEmbeds">[B*n, 77 + max_sequence_length, joint_attention_dim]: CLIP-L|CLIP-G penultimate states (zero-padded), then T5.</param>
/// <param name="PooledPromptEmbeds">[B*n, proj_L + proj_G].</param>
/// <param name="NegativePromptEmbeds">The same for the negative prompt (null without guidance).</param>
/// <param name="NegativePooledPromptEmbeds">Pooled negative embeddings (null without guidance).</param>
public sealed record EncodedPrompt(Tensor PromptEmbeds, Tensor PooledPromptEmbeds, Tensor? NegativePromptEmbeds, Tensor? NegativePooledPromptEmbeds)
    : IDisposable
{
    /// <summary>Disposes the four tensors.</summary>
    public void Dispose()
    {
        PromptEmbeds.Dispose();
        PooledPromptEmbeds.Dispose();
        NegativePromptEmbeds?.Dispose();
        NegativePooledPromptEmbeds?.Dispose();
    }
}

/// <summary>
/// SD3's <c>encode_prompt</c>: CLIP-L and CLIP-G penultimate hidden states side by side, zero-padded to the T5 width, then
/// T5's last hidden state along the sequence; pooled = both CLIP projections. No attention masks (CLIP uses only its
/// causal mask, T5 attends to padding), exactly as diffusers calls the encoders. Without T5 its part is zeros.
/// </summary>
public sealed class StableDiffusion3PromptEncoder
{
    private readonly CLIPTokenizer? _tokenizer, _tokenizer2;
    private readonly CLIPTextModelWithProjection? _textEncoder, _textEncoder2;
    private readonly T5Tokenizer? _tokenizer3;
    private readonly T5EncoderModel? _textEncoder3;
    private readonly int _jointAttentionDim;

    /// <summary>
    /// Creates the encoder; <paramref name="textEncoder3"/> and <paramref name="tokenizer3"/> may be null (T5 dropped).
    /// Without the CLIP encoders and tokenizers (all four null) it only passes precomputed prompt embeddings through.
    /// </summary>
    public StableDiffusion3PromptEncoder(CLIPTokenizer? tokenizer, CLIPTextModelWithProjection? textEncoder,
        CLIPTokenizer? tokenizer2, CLIPTextModelWithProjection? textEncoder2,
        T5Tokenizer? tokenizer3, T5EncoderModel? textEncoder3, int jointAttentionDim)
    {
        if ((tokenizer3 is null) != (textEncoder3 is null))
            throw new ArgumentException("T5 needs both its tokenizer and its encoder, or neither.");
        bool anyClip = tokenizer is not null || textEncoder is not null || tokenizer2 is not null || textEncoder2 is not null;
        bool allClip = tokenizer is not null && textEncoder is not null && tokenizer2 is not null && textEncoder2 is not null;
        if (anyClip != allClip)
            throw new ArgumentException("CLIP-L and CLIP-G need both their tokenizers and their encoders, or none of the four (a pipeline that only takes prompt_embeds).");
        _tokenizer = tokenizer;
        _textEncoder = textEncoder;
        _tokenizer2 = tokenizer2;
        _textEncoder2 = textEncoder2;
        _tokenizer3 = tokenizer3;
        _textEncoder3 = textEncoder3;
        _jointAttentionDim = jointAttentionDim;
    }

    /// <summary>The CLIP sequence length (tokenizer model_max_length, 77; 77 when there is no tokenizer).</summary>
    public int ClipMaxLength => _tokenizer?.ModelMaxLength ?? 77;

    /// <summary>Called with the component name (text_encoder, text_encoder_2, text_encoder_3) before that encoder runs (model offload).</summary>
    internal Action<string>? BeforeEncoder { get; init; }

    /// <summary>Called for each prompt part that was cut to fit its tokenizer (which tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnTruncated { get; init; }

    /// <summary>
    /// Encodes prompts; negatives too when <paramref name="doClassifierFreeGuidance"/> and none are precomputed.
    /// Tensors in <paramref name="request"/> are copied, never taken over.
    /// </summary>
    public EncodedPrompt Encode(StableDiffusion3Request request, bool doClassifierFreeGuidance, Device device)
    {
        int n = request.NumImagesPerPrompt;
        Tensor embeds, pooled;
        int batch;
        if (request.PromptEmbeds is { } given)
        {
            if (request.PooledPromptEmbeds is null)
                throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (they come from the same encode_prompt call).");
            batch = (int)given.shape[0];
            embeds = given.to(device).repeat_interleave(n, dim: 0);
            pooled = request.PooledPromptEmbeds.to(device).repeat_interleave(n, dim: 0);
        }
        else
        {
            var prompt = request.Prompt ?? throw new ArgumentException("Give a prompt or prompt_embeds.");
            batch = prompt.Count;
            (embeds, pooled) = EncodeOne(prompt.Items, (request.Prompt2 ?? prompt).Broadcast(batch, "prompt_2"),
                (request.Prompt3 ?? prompt).Broadcast(batch, "prompt_3"), n, request.ClipSkip, request.MaxSequenceLength, device);
        }

        Tensor? negEmbeds = null, negPooled = null;
        if (doClassifierFreeGuidance)
        {
            if (request.NegativePromptEmbeds is { } negGiven)
            {
                if (request.NegativePooledPromptEmbeds is null)
                    throw new ArgumentException("negative_prompt_embeds needs negative_pooled_prompt_embeds too.");
                negEmbeds = negGiven.to(device).repeat_interleave(n, dim: 0);
                negPooled = request.NegativePooledPromptEmbeds.to(device).repeat_interleave(n, dim: 0);
            }
            else
            {
                PromptList negative = request.NegativePrompt ?? "";
                var neg1 = negative.Broadcast(batch, "negative_prompt");
                var neg2 = (request.NegativePrompt2 ?? negative).Broadcast(batch, "negative_prompt_2");
                var neg3 = (request.NegativePrompt3 ?? negative).Broadcast(batch, "negative_prompt_3");
                // diffusers encodes negatives with clip_skip=None whatever the positive prompt used.
                (negEmbeds, negPooled) = EncodeOne(neg1, neg2, neg3, n, clipSkip: null, request.MaxSequenceLength, device);
            }
            if (!negEmbeds.shape.SequenceEqual(embeds.shape))
                throw new ArgumentException($"negative_prompt_embeds [{string.Join(", ", negEmbeds.shape)}] must have the shape of prompt_embeds [{string.Join(", ", embeds.shape)}].");
        }
        return new EncodedPrompt(embeds, pooled, negEmbeds, negPooled);
    }

    private (Tensor Embeds, Tensor Pooled) EncodeOne(IReadOnlyList<string> prompt, IReadOnlyList<string> prompt2,
        IReadOnlyList<string> prompt3, int n, int? clipSkip, int maxSequenceLength, Device device)
    {
        if (_tokenizer is null || _textEncoder is null || _tokenizer2 is null || _textEncoder2 is null)
            throw new ArgumentException("This pipeline has no text encoders: give prompt_embeds and pooled_prompt_embeds (and the negative ones under guidance) instead of prompts.");
        using var scope = NewDisposeScope();
        BeforeEncoder?.Invoke("text_encoder");
        var (clipL, pooledL) = ClipEmbeds(_tokenizer, _textEncoder, prompt, clipSkip, device, "tokenizer (CLIP-L)");
        BeforeEncoder?.Invoke("text_encoder_2");
        var (clipG, pooledG) = ClipEmbeds(_tokenizer2, _textEncoder2, prompt2, clipSkip, device, "tokenizer_2 (CLIP-G)");
        var dtype = clipL.dtype;
        var clip = cat([clipL, clipG.to(dtype)], dim: -1);
        var t5 = T5Embeds(prompt3, maxSequenceLength, device, dtype);
        clip = nn.functional.pad(clip, [0, t5.shape[^1] - clip.shape[^1]]);
        var embeds = cat([clip, t5.to(dtype)], dim: -2).repeat_interleave(n, dim: 0);
        var pooled = cat([pooledL, pooledG.to(dtype)], dim: -1).repeat_interleave(n, dim: 0);
        return (embeds.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope());
    }

    private (Tensor Hidden, Tensor Pooled) ClipEmbeds(CLIPTokenizer tokenizer, CLIPTextModelWithProjection encoder,
        IReadOnlyList<string> prompts, int? clipSkip, Device device, string name)
    {
        using var input = TokenIds(tokenizer, prompts, tokenizer.ModelMaxLength, device, name);
        using var output = encoder.Forward(input, outputHiddenStates: true);
        int layer = clipSkip is { } skip ? skip + 2 : 2;
        if (layer > output.HiddenStates.Count)
            throw new ArgumentException($"clip_skip {clipSkip} is larger than the encoder has layers.");
        // One copy either way: the encoder's outputs are freed with `output`.
        var hidden = output.HiddenStates[^layer].to(_textEncoder!.WeightDtype(), copy: true);
        var pooled = (output.TextEmbeds ?? throw new InvalidOperationException("The CLIP encoder has no text projection.")).clone();
        return (hidden, pooled);
    }

    private Tensor T5Embeds(IReadOnlyList<string> prompts, int maxSequenceLength, Device device, ScalarType dtype)
    {
        if (_textEncoder3 is null || _tokenizer3 is null)
            return zeros([prompts.Count, maxSequenceLength, _jointAttentionDim], dtype: dtype, device: device);
        using var input = TokenIds(_tokenizer3, prompts, maxSequenceLength, device, "tokenizer_3 (T5)");
        BeforeEncoder?.Invoke("text_encoder_3");
        return _textEncoder3.Forward(input);
    }

    private Tensor TokenIds(ITextTokenizer tokenizer, IReadOnlyList<string> prompts, int maxLength, Device device, string name) =>
        PromptTokens.Ids(tokenizer, prompts, maxLength, device, name, OnTruncated);
}
