using DiffusersSharp.Loaders;
using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>One prompt side as the Flux transformer takes it.</summary>
/// <param name="PromptEmbeds">T5's last hidden state [B·n, max_sequence_length, joint_attention_dim].</param>
/// <param name="PooledPromptEmbeds">CLIP-L's pooled output [B·n, 768].</param>
/// <param name="TextIds">The text tokens' rotary positions [S, 3]: zeros.</param>
public sealed record FluxEncodedPrompt(Tensor PromptEmbeds, Tensor PooledPromptEmbeds, Tensor TextIds) : IDisposable
{
    /// <summary>Disposes the three tensors.</summary>
    public void Dispose()
    {
        PromptEmbeds.Dispose();
        PooledPromptEmbeds.Dispose();
        TextIds.Dispose();
    }
}

/// <summary>
/// Flux's <c>encode_prompt</c>: CLIP-L's pooled output (tokens padded to 77, no projection) as the pooled embedding, T5's
/// last hidden state (padded to max_sequence_length, no attention mask, as diffusers calls it) as the sequence, and zero
/// text ids. The copies for images per prompt are adjacent (diffusers' <c>repeat(1, n, 1).view</c>). The CLIP prompts go
/// through <see cref="TextualInversion.MaybeConvertPrompt(string, CLIPTokenizer)"/> first, as diffusers' Flux pipelines
/// (<c>TextualInversionLoaderMixin</c>) convert them.
/// </summary>
public sealed class FluxPromptEncoder
{
    private readonly CLIPTokenizer? _tokenizer;
    private readonly CLIPTextModel? _textEncoder;
    private readonly T5Tokenizer? _tokenizer2;
    private readonly T5EncoderModel? _textEncoder2;

    /// <summary>Creates the encoder; all four null gives one that only passes precomputed embeddings through.</summary>
    /// <exception cref="ArgumentException">Only some of the four are given.</exception>
    public FluxPromptEncoder(CLIPTokenizer? tokenizer, CLIPTextModel? textEncoder, T5Tokenizer? tokenizer2, T5EncoderModel? textEncoder2)
    {
        bool any = tokenizer is not null || textEncoder is not null || tokenizer2 is not null || textEncoder2 is not null;
        bool all = tokenizer is not null && textEncoder is not null && tokenizer2 is not null && textEncoder2 is not null;
        if (any != all)
            throw new ArgumentException("Flux needs CLIP-L and T5 with their tokenizers, or none of the four (a pipeline that only takes prompt_embeds).");
        _tokenizer = tokenizer;
        _textEncoder = textEncoder;
        _tokenizer2 = tokenizer2;
        _textEncoder2 = textEncoder2;
    }

    /// <summary>Called with the component name (text_encoder, text_encoder_2) before that encoder runs (model offload).</summary>
    internal Action<string>? BeforeEncoder { get; init; }

    /// <summary>Called for each prompt that was cut to fit its tokenizer (which tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnTruncated { get; init; }

    /// <summary>
    /// diffusers' FluxControlNetPipeline converts the T5 prompts with the CLIP tokenizer (its <c>_get_t5_prompt_embeds</c>
    /// calls <c>maybe_convert_prompt(prompt, self.tokenizer)</c>), so a multi-vector textual inversion token is spelled out
    /// for T5 too; the other Flux pipelines convert them with T5's tokenizer, which holds no textual inversion tokens here.
    /// </summary>
    internal bool ConvertT5PromptWithClipTokenizer { get; set; }

    /// <summary>
    /// Encodes <paramref name="prompt"/> (CLIP) and <paramref name="prompt2"/> (T5, defaults to the prompt), each
    /// <paramref name="numImagesPerPrompt"/> times, or copies the given embeddings (repeated the same way).
    /// <paramref name="textIdsDtype"/> is the dtype of the text ids (diffusers: the CLIP encoder's).
    /// </summary>
    public FluxEncodedPrompt Encode(PromptList? prompt, PromptList? prompt2, Tensor? promptEmbeds, Tensor? pooledPromptEmbeds,
        int numImagesPerPrompt, int maxSequenceLength, Device device, ScalarType textIdsDtype)
    {
        using var scope = NewDisposeScope();
        int n = numImagesPerPrompt;
        Tensor embeds, pooled;
        if (promptEmbeds is not null)
        {
            if (pooledPromptEmbeds is null)
                throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (they come from the same encode_prompt call).");
            embeds = promptEmbeds.to(device).repeat_interleave(n, dim: 0);
            pooled = pooledPromptEmbeds.to(device).repeat_interleave(n, dim: 0);
        }
        else
        {
            var clipPrompts = (prompt ?? throw new ArgumentException("Give a prompt or prompt_embeds.")).Items;
            var t5Prompts = (prompt2 ?? prompt.Value).Broadcast(clipPrompts.Count, "prompt_2");
            if (_tokenizer is null || _textEncoder is null || _tokenizer2 is null || _textEncoder2 is null)
                throw new ArgumentException("This pipeline has no text encoders: give prompt_embeds and pooled_prompt_embeds instead of prompts.");
            if (ConvertT5PromptWithClipTokenizer) t5Prompts = TextualInversion.MaybeConvertPrompt(t5Prompts, _tokenizer);
            clipPrompts = TextualInversion.MaybeConvertPrompt(clipPrompts, _tokenizer);
            BeforeEncoder?.Invoke("text_encoder");
            using (var ids = PromptTokens.Ids(_tokenizer, clipPrompts, _tokenizer.ModelMaxLength, device, "tokenizer (CLIP-L)", OnTruncated))
            using (var output = _textEncoder.Forward(ids, outputHiddenStates: false))
                pooled = output.PooledOutput.to(_textEncoder.WeightDtype(), copy: true).repeat_interleave(n, dim: 0);
            BeforeEncoder?.Invoke("text_encoder_2");
            using (var ids = PromptTokens.Ids(_tokenizer2, t5Prompts, maxSequenceLength, device, "tokenizer_2 (T5)", OnTruncated))
                embeds = _textEncoder2.Forward(ids).to(_textEncoder2.WeightDtype()).repeat_interleave(n, dim: 0);
        }
        var textIds = zeros([embeds.shape[1], 3], dtype: textIdsDtype, device: device);
        return new FluxEncodedPrompt(embeds.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope(), textIds.MoveToOuterDisposeScope());
    }
}
