using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>The request fields of the pipelines whose text embeddings travel with an attention mask (PixArt, Sana,
/// Lumina-Image 2.0).</summary>
internal interface IMaskedPromptRequest
{
    PromptList? Prompt { get; }
    PromptList? NegativePrompt { get; }
    Tensor? PromptEmbeds { get; }
    Tensor? PromptAttentionMask { get; }
    Tensor? NegativePromptEmbeds { get; }
    Tensor? NegativePromptAttentionMask { get; }
    double GuidanceScale { get; }
    int NumInferenceSteps { get; }
    int NumImagesPerPrompt { get; }
    Runtime.Generator? Generator { get; }
    IReadOnlyList<Runtime.Generator>? Generators { get; }
    Tensor? Latents { get; }
    OutputType OutputType { get; }
}

/// <summary>
/// The checks diffusers' PixArt, Sana and Lumina-Image 2.0 <c>check_inputs</c> make (and what they would fail on later), shared: prompts or
/// embeddings (with their masks), the embeddings' width, the negative side's shape and count, generators and latents
/// for the batch, steps, guidance and images per prompt. All before any compute.
/// </summary>
internal static class MaskedPromptInputs
{
    /// <summary>The batch: prompts (or embedding rows) × images per prompt.</summary>
    public static long Batch(IMaskedPromptRequest r) => (r.PromptEmbeds?.shape[0] ?? r.Prompt?.Count ?? 0) * r.NumImagesPerPrompt;

    /// <summary>
    /// Embeddings [B, S, D] and their mask [B, S] repeated for <paramref name="n"/> images per prompt, each row next to
    /// itself (<c>embeds.repeat(1, n, 1).view(B·n, S, -1)</c>). Deliberate difference: diffusers' Sana and Lumina-Image 2.0
    /// pipelines tile the masks batch-wise (<c>mask.repeat(n, 1)</c>), so with several prompts and several images per
    /// prompt their masks no longer line up with the embeddings; here each mask stays with its own prompt.
    /// </summary>
    public static (Tensor Embeds, Tensor Mask) Repeat(Tensor embeds, Tensor mask, int n)
    {
        long b = embeds.shape[0], s = embeds.shape[1];
        return (embeds.repeat(1, n, 1).view(b * n, s, -1), mask.repeat(1, n).view(b * n, -1));
    }

    /// <summary>Throws on what the request gets wrong for a model of <paramref name="captionWidth"/>-wide text embeddings
    /// and latents of <paramref name="latentShape"/> (batch first).</summary>
    /// <exception cref="ArgumentException">The first problem found.</exception>
    public static void Check(IMaskedPromptRequest r, long captionWidth, bool hasTextEncoder, string encoderName, long[] latentShape)
    {
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        if (r.NumInferenceSteps < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.OutputType is not (OutputType.Image or OutputType.Numpy or OutputType.Tensor or OutputType.Latent))
            throw new ArgumentException($"Unknown output type {r.OutputType}.");
        if (r.PromptEmbeds is not null && r.Prompt is not null)
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && r.NegativePrompt is not null)
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (r.PromptEmbeds is not null && r.PromptAttentionMask is null)
            throw new ArgumentException("prompt_embeds needs prompt_attention_mask too.");
        if (r.NegativePromptEmbeds is not null && r.NegativePromptAttentionMask is null)
            throw new ArgumentException("negative_prompt_embeds needs negative_prompt_attention_mask too.");
        if (r.PromptEmbeds is { } e)
        {
            if (e.dim() != 3 || e.shape[2] != captionWidth || e.shape[1] < 1 || e.shape[0] < 1)
                throw new ArgumentException($"prompt_embeds must be [B, S, {captionWidth}] (the transformer's caption width), got {Shape(e)}.");
            if (!r.PromptAttentionMask!.shape.SequenceEqual(e.shape[..2]))
                throw new ArgumentException($"prompt_attention_mask must be [{e.shape[0]}, {e.shape[1]}], got {Shape(r.PromptAttentionMask)}.");
        }
        if (r.NegativePromptEmbeds is { } ne)
        {
            if (r.PromptEmbeds is null)
                throw new ArgumentException("negative_prompt_embeds go with prompt_embeds (diffusers compares their shapes).");
            if (!ne.shape.SequenceEqual(r.PromptEmbeds.shape))
                throw new ArgumentException($"prompt_embeds {Shape(r.PromptEmbeds)} and negative_prompt_embeds {Shape(ne)} must have the same shape.");
            if (!r.NegativePromptAttentionMask!.shape.SequenceEqual(r.PromptAttentionMask!.shape))
                throw new ArgumentException($"prompt_attention_mask {Shape(r.PromptAttentionMask)} and negative_prompt_attention_mask {Shape(r.NegativePromptAttentionMask)} must have the same shape.");
        }
        bool needsEncoder = r.PromptEmbeds is null || (r.GuidanceScale > 1 && r.NegativePromptEmbeds is null);
        if (needsEncoder && !hasTextEncoder)
            throw new ArgumentException($"These components have no {encoderName} text encoder: pass prompt_embeds (and, with guidance, negative_prompt_embeds) with their masks.");
        if (r.Prompt is { } p && r.NegativePrompt is { } np && np.Count != 1 && np.Count != p.Count)
            throw new ArgumentException($"{np.Count} negative prompts were given for {p.Count} prompts.");
        if (r.PromptEmbeds is { } pe && r.NegativePrompt is { } np2 && np2.Count != 1 && np2.Count != pe.shape[0])
            throw new ArgumentException($"{np2.Count} negative prompts were given for {pe.shape[0]} prompt embeddings.");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        if (r.Generators is { } generators && generators.Count != latentShape[0])
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {latentShape[0]} (prompts x images per prompt).");
        if (r.Latents is { } l && !l.shape.SequenceEqual(latentShape))
            throw new ArgumentException($"latents must be [{string.Join(", ", latentShape)}] for this request, got {Shape(l)}.");
    }
}
