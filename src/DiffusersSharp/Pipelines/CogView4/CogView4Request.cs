using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.CogView4;

/// <summary>
/// The arguments of a CogView4 call (diffusers' <c>CogView4Pipeline.__call__</c>), with the same defaults.
/// </summary>
public sealed record CogView4Request
{
    /// <summary>The prompt(s); give these or <see cref="PromptEmbeds"/>.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>The negative prompt(s) for classifier-free guidance; null is diffusers' default <c>""</c>. Not together
    /// with <see cref="NegativePromptEmbeds"/>.</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Output height in pixels, a multiple of 16; null is the transformer's <c>sample_size</c> × 8 (1024).</summary>
    public int? Height { get; init; }

    /// <summary>Output width in pixels, a multiple of 16; null is the transformer's <c>sample_size</c> × 8 (1024).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (diffusers' default 50); with <see cref="Timesteps"/> their count decides.</summary>
    public int NumInferenceSteps { get; init; } = 50;

    /// <summary>Custom timesteps, one per step (diffusers' default: <c>linspace(1000, 1, steps)</c> truncated to integers);
    /// the sigmas are then <c>timesteps / 1000</c>, shifted.</summary>
    public int[]? Timesteps { get; init; }

    /// <summary>Custom sigmas, one per step (shifted by the scheduler; the timesteps stay the default or given ones).</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>Classifier-free guidance scale; 1 or below disables guidance (diffusers' default 5).</summary>
    public double GuidanceScale { get; init; } = 5.0;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>The noise generator (CPU generators reproduce PyTorch's draws).</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), instead of <see cref="Generator"/>.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [B, 16, H/8, W/8] instead of drawn noise.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>GLM prompt embeddings [B, S, text_embed_dim] (the text encoder's second-to-last hidden states).</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Negative embeddings [B, S', text_embed_dim]; their length may differ from the prompt's (CFG runs the two in
    /// separate transformer calls).</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>The size conditioning (height, width) of the "original" image; null is the output size.</summary>
    public (int Height, int Width)? OriginalSize { get; init; }

    /// <summary>The crop conditioning (top, left); diffusers' default (0, 0).</summary>
    public (int Top, int Left) CropsCoordsTopLeft { get; init; } = (0, 0);

    /// <summary>Tokens per prompt at most (diffusers' default 1024).</summary>
    public int MaxSequenceLength { get; init; } = 1024;

    /// <summary>What to return: images, NHWC / NCHW tensors, or the final latents.</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>Called after every step (diffusers' <c>callback_on_step_end</c>, whose tensor inputs here are the latents,
    /// the prompt embeddings and <see cref="StepEndContext.NegativePromptEmbeds"/>); may replace them or interrupt.
    /// <see cref="StepEndContext.Timestep"/> is the step's timestep (diffusers passes <c>scheduler.sigmas[i]</c> there).</summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}
