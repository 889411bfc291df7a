using DiffusersSharp.Loaders;
using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>Prompt embeddings as the UNet takes them.</summary>
/// <param name="PromptEmbeds">[B*n, 77, cross_attention_dim].</param>
/// <param name="PooledPromptEmbeds">SDXL: [B*n, projection_dim] (the second encoder's text_embeds); null for SD 1.x / 2.x.</param>
/// <param name="NegativePromptEmbeds">The same for the negative prompt (null without guidance).</param>
/// <param name="NegativePooledPromptEmbeds">SDXL: pooled negative embeddings (null without guidance).</param>
public sealed record StableDiffusionEncodedPrompt(Tensor PromptEmbeds, Tensor? PooledPromptEmbeds, Tensor? NegativePromptEmbeds,
    Tensor? NegativePooledPromptEmbeds) : IDisposable
{
    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        PromptEmbeds.Dispose();
        PooledPromptEmbeds?.Dispose();
        NegativePromptEmbeds?.Dispose();
        NegativePooledPromptEmbeds?.Dispose();
    }
}

/// <summary>
/// The <c>encode_prompt</c> of the UNet pipelines. SD 1.x / 2.x: CLIP's last hidden state (after the final LayerNorm;
/// with clip_skip an earlier layer through the final LayerNorm), negatives "" by default. SDXL: the penultimate hidden
/// states of CLIP-L and OpenCLIP-G side by side, pooled = the second encoder's projection, and zero negatives when the
/// model says <c>force_zeros_for_empty_prompt</c> and no negative prompt is given. An SDXL model without the first
/// encoder (the refiner) uses OpenCLIP-G's penultimate states alone, and encodes <c>prompt</c> (not <c>prompt_2</c>) with
/// it, as diffusers' encode_prompt pairs the prompts with the encoders it has. No attention masks, as diffusers calls
/// these encoders. Every prompt goes through <see cref="TextualInversion.MaybeConvertPrompt(string, CLIPTokenizer)"/> with
/// the tokenizer that then tokenizes it, as diffusers' pipelines (<c>TextualInversionLoaderMixin</c>) do.
/// </summary>
public sealed class StableDiffusionPromptEncoder
{
    private readonly CLIPTokenizer? _tokenizer;
    private readonly CLIPTextModel? _textEncoder;
    private readonly CLIPTokenizer? _tokenizer2;
    private readonly CLIPTextModelWithProjection? _textEncoder2;
    private readonly bool _forceZerosForEmptyPrompt;

    /// <summary>
    /// Creates the encoder: SD 1.x / 2.x with one tokenizer and encoder; SDXL with the second pair too
    /// (<paramref name="tokenizer2"/> and <paramref name="textEncoder2"/> both given, or both null), the first pair then
    /// optional (the SDXL refiner has none). With no encoder at all it only takes prompt embeddings (diffusers' <c>text_encoder=None</c>); set
    /// <see cref="EmbeddingsOnlyXL"/> for SDXL ones (pooled embeddings too).
    /// </summary>
    /// <exception cref="ArgumentException">An encoder without its tokenizer or the reverse.</exception>
    public StableDiffusionPromptEncoder(CLIPTokenizer? tokenizer, CLIPTextModel? textEncoder,
        CLIPTokenizer? tokenizer2 = null, CLIPTextModelWithProjection? textEncoder2 = null, bool forceZerosForEmptyPrompt = false)
    {
        if ((tokenizer2 is null) != (textEncoder2 is null))
            throw new ArgumentException("The second text encoder needs its tokenizer, and the other way round.");
        if ((tokenizer is null) != (textEncoder is null))
            throw new ArgumentException("The text encoder needs its tokenizer, and the other way round.");
        _tokenizer = tokenizer;
        _textEncoder = textEncoder;
        _tokenizer2 = tokenizer2;
        _textEncoder2 = textEncoder2;
        _forceZerosForEmptyPrompt = forceZerosForEmptyPrompt;
    }

    /// <summary>True for SDXL's two encoders (or <see cref="EmbeddingsOnlyXL"/>).</summary>
    public bool IsXL => _textEncoder2 is not null || EmbeddingsOnlyXL;

    /// <summary>Without text encoders: the embeddings are SDXL's (pooled embeddings required, zero negatives).</summary>
    public bool EmbeddingsOnlyXL { get; init; }

    /// <summary>Called with the component name (text_encoder, text_encoder_2) before that encoder runs (model offload).</summary>
    internal Action<string>? BeforeEncoder { get; init; }

    /// <summary>Called for each prompt that was cut to fit its tokenizer (which tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnTruncated { get; init; }

    /// <summary>
    /// Encodes prompts; negatives too when <paramref name="doClassifierFreeGuidance"/> and none are precomputed.
    /// Tensors in <paramref name="request"/> are copied, never taken over.
    /// </summary>
    public StableDiffusionEncodedPrompt Encode(StableDiffusionRequest request, bool doClassifierFreeGuidance, Device device)
    {
        int n = request.NumImagesPerPrompt;
        Tensor embeds;
        Tensor? pooled = null;
        int batch;
        if (request.PromptEmbeds is { } given)
        {
            if (IsXL && request.PooledPromptEmbeds is null)
                throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (they come from the same encode_prompt call).");
            batch = (int)given.shape[0];
            embeds = given.to(device).repeat_interleave(n, dim: 0);
            pooled = IsXL ? request.PooledPromptEmbeds!.to(device).repeat_interleave(n, dim: 0) : null;
        }
        else
        {
            var prompt = request.Prompt ?? throw new ArgumentException("Give a prompt or prompt_embeds.");
            batch = prompt.Count;
            (embeds, pooled) = EncodeOne(prompt.Items, (request.Prompt2 ?? prompt).Broadcast(batch, "prompt_2"), n, request.ClipSkip, device);
        }

        Tensor? negEmbeds = null, negPooled = null;
        if (doClassifierFreeGuidance)
        {
            if (request.NegativePromptEmbeds is { } negGiven)
            {
                if (IsXL && request.NegativePooledPromptEmbeds is null)
                    throw new ArgumentException("negative_prompt_embeds needs negative_pooled_prompt_embeds too.");
                negEmbeds = negGiven.to(device).repeat_interleave(n, dim: 0);
                negPooled = IsXL ? request.NegativePooledPromptEmbeds!.to(device).repeat_interleave(n, dim: 0) : null;
            }
            else if (IsXL && _forceZerosForEmptyPrompt && request.NegativePrompt is null)
            {
                negEmbeds = zeros_like(embeds);
                negPooled = zeros_like(pooled!);
            }
            else
            {
                PromptList negative = request.NegativePrompt ?? "";
                var neg1 = negative.Broadcast(batch, "negative_prompt");
                var neg2 = (request.NegativePrompt2 ?? negative).Broadcast(batch, "negative_prompt_2");
                // diffusers encodes negatives with clip_skip=None whatever the positive prompt used.
                (negEmbeds, negPooled) = EncodeOne(neg1, neg2, n, clipSkip: null, device);
            }
            if (!negEmbeds.shape.SequenceEqual(embeds.shape))
                throw new ArgumentException($"negative_prompt_embeds [{string.Join(", ", negEmbeds.shape)}] must have the shape of prompt_embeds [{string.Join(", ", embeds.shape)}].");
        }
        return new StableDiffusionEncodedPrompt(embeds, pooled, negEmbeds, negPooled);
    }

    private (Tensor Embeds, Tensor? Pooled) EncodeOne(IReadOnlyList<string> prompt, IReadOnlyList<string> prompt2, int n, int? clipSkip, Device device)
    {
        if (_textEncoder is null && _textEncoder2 is null)
            throw new ArgumentException("This pipeline has no text encoder (text_encoder=None): give prompt_embeds (and negative_prompt_embeds under guidance) instead of prompts.");
        using var scope = NewDisposeScope();
        Tensor embeds, pooled;
        if (_textEncoder is null) prompt2 = prompt; // diffusers zips [prompt, prompt_2] with the one encoder it has
        else BeforeEncoder?.Invoke("text_encoder");
        using var ids = _textEncoder is null ? null : TokenIds(_tokenizer!, prompt, device, "tokenizer");
        using var output = _textEncoder?.Forward(ids!, outputHiddenStates: IsXL || clipSkip is not null);
        if (!IsXL)
        {
            embeds = clipSkip is { } skip
                ? _textEncoder!.FinalLayerNorm(Layer(output!.HiddenStates, skip + 1, clipSkip))
                : output!.LastHiddenState.clone();
            embeds = embeds.to(_textEncoder!.WeightDtype(), device).repeat_interleave(n, dim: 0);
            return (embeds.MoveToOuterDisposeScope(), null);
        }
        // SDXL: "We are only ALWAYS interested in the pooled output of the final text encoder"; hidden states [-(skip + 2)].
        int layer = clipSkip is { } s ? s + 2 : 2;
        var first = output is null ? null : Layer(output.HiddenStates, layer, clipSkip);
        BeforeEncoder?.Invoke("text_encoder_2");
        using var ids2 = TokenIds(_tokenizer2!, prompt2, device, "tokenizer_2");
        using var output2 = _textEncoder2!.Forward(ids2, outputHiddenStates: true);
        var second = Layer(output2.HiddenStates, layer, clipSkip);
        pooled = output2.TextEmbeds ?? throw new InvalidOperationException("text_encoder_2 has no text projection.");
        var dtype = _textEncoder2.WeightDtype();
        embeds = (first is null ? second : cat([first, second], dim: -1)).to(dtype, device).repeat_interleave(n, dim: 0);
        pooled = pooled.to(dtype, device).repeat_interleave(n, dim: 0);
        return (embeds.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope());
    }

    private static Tensor Layer(IReadOnlyList<Tensor> hidden, int fromEnd, int? clipSkip)
    {
        if (fromEnd > hidden.Count)
            throw new ArgumentException($"clip_skip {clipSkip} is larger than the text encoder has layers.");
        return hidden[^fromEnd];
    }

    private Tensor TokenIds(CLIPTokenizer tokenizer, IReadOnlyList<string> prompts, Device device, string name) =>
        PromptTokens.Ids(tokenizer, TextualInversion.MaybeConvertPrompt(prompts, tokenizer), tokenizer.ModelMaxLength, device, name, OnTruncated);
}
