using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// The parameters of a Flux text-to-image call, with diffusers' names and defaults (<c>FluxPipeline.__call__</c>).
/// Tensors passed in stay owned by the caller.
/// </summary>
public sealed record FluxRequest
{
    /// <summary>The prompt(s) for CLIP; required unless <see cref="PromptEmbeds"/> is given.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>Prompt for T5 (defaults to <see cref="Prompt"/>).</summary>
    public PromptList? Prompt2 { get; init; }

    /// <summary>Negative prompt(s): only used by true CFG (<see cref="TrueCfgScale"/> &gt; 1).</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Negative prompt for T5 (defaults to <see cref="NegativePrompt"/>).</summary>
    public PromptList? NegativePrompt2 { get; init; }

    /// <summary>
    /// diffusers' true classifier-free guidance: with a value above 1 and a negative prompt (or negative embeddings), each
    /// step runs the transformer twice and uses <c>neg + scale · (pos − neg)</c>. 1 turns it off.
    /// </summary>
    public double TrueCfgScale { get; init; } = 1.0;

    /// <summary>Image height in pixels, a multiple of 16 (default 1024: 128 × the VAE scale factor).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels, a multiple of 16 (default 1024).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (default 28; FLUX.1-schnell is made for about 4).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Custom sigmas (default <c>linspace(1, 1/N, N)</c>); the scheduler's shift is still applied.</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>
    /// The guidance scale fed to the guidance embedding of guidance-distilled models (FLUX.1-dev); not CFG, no second
    /// transformer pass. Ignored by models without the embedding (FLUX.1-schnell).
    /// </summary>
    public double GuidanceScale { get; init; } = 3.5;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (batch x images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial packed latents [B·n, (H/16)·(W/16), 64] instead of drawn noise (diffusers' <c>latents</c> are packed).</summary>
    public Tensor? Latents { get; init; }

    /// <summary>Precomputed T5 prompt embeddings [B, S, joint_attention_dim].</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Precomputed pooled CLIP embeddings [B, pooled_projection_dim]; required with <see cref="PromptEmbeds"/>.</summary>
    public Tensor? PooledPromptEmbeds { get; init; }

    /// <summary>Precomputed negative T5 embeddings (true CFG).</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>Precomputed negative pooled embeddings (true CFG); required with <see cref="NegativePromptEmbeds"/>.</summary>
    public Tensor? NegativePooledPromptEmbeds { get; init; }

    /// <summary>What to return (Latent: the final packed latents).</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>T5 sequence length (at most 512).</summary>
    public int MaxSequenceLength { get; init; } = 512;

    /// <summary>The dynamic-shifting parameter (default: diffusers' <c>calculate_shift</c> of the image token count).</summary>
    public double? Mu { get; init; }

    /// <summary>
    /// Called after every step; may replace the (packed) latents and the prompt embeddings, change the true CFG scale
    /// (<see cref="StepEndContext.GuidanceScale"/>; 1 or below stops it) or interrupt.
    /// </summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}
