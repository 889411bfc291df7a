using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.AuraFlow;

/// <summary>
/// The arguments of an AuraFlow call (diffusers' <c>AuraFlowPipeline.__call__</c>), with the same defaults. diffusers'
/// <c>prompt_attention_mask</c> / <c>negative_prompt_attention_mask</c> are not here: diffusers requires them with
/// embeddings but never reads them (the transformer takes no mask; encode_prompt zeroes the padded positions of the
/// embeddings instead, which <see cref="AuraFlowPipeline.EncodePrompt"/> does too).
/// </summary>
public sealed record AuraFlowRequest
{
    /// <summary>The prompt(s); give these or <see cref="PromptEmbeds"/>.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>The negative prompt(s) for classifier-free guidance; null is diffusers' default <c>""</c>. Not together
    /// with <see cref="NegativePromptEmbeds"/>.</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Denoising steps (diffusers' default 50); with <see cref="Sigmas"/> their count decides, as in diffusers.</summary>
    public int NumInferenceSteps { get; init; } = 50;

    /// <summary>Custom sigmas, one per step (diffusers' default: the scheduler's own schedule).</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>Classifier-free guidance scale; 1 or below disables guidance (diffusers' default 3.5).</summary>
    public double GuidanceScale { get; init; } = 3.5;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Output height in pixels, a multiple of 16 (diffusers' default 1024).</summary>
    public int Height { get; init; } = 1024;

    /// <summary>Output width in pixels, a multiple of 16 (diffusers' default 1024).</summary>
    public int Width { get; init; } = 1024;

    /// <summary>The noise generator (CPU generators reproduce PyTorch's draws).</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), instead of <see cref="Generator"/>.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [B, 4, H/8, W/8] instead of drawn noise.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>UMT5 prompt embeddings [B, S, joint_attention_dim] (padding zeroed, as encode_prompt makes them).</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Negative embeddings of <see cref="PromptEmbeds"/>' shape, repeated per image as the prompt's.</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>Tokens per prompt (diffusers' default 256); the negative prompt is cut to the prompt embeddings' length.</summary>
    public int MaxSequenceLength { get; init; } = 256;

    /// <summary>What to return: images, NHWC / NCHW tensors, or the final latents.</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>Called after every step (diffusers' <c>callback_on_step_end</c>); may replace the latents and the
    /// (CFG-concatenated) prompt embeddings, or interrupt.</summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}
