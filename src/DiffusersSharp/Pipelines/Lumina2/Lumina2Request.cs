using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Lumina2;

/// <summary>
/// The arguments of a Lumina-Image 2.0 call (diffusers' <c>Lumina2Pipeline.__call__</c>), with the same defaults. Each
/// prompt is put after the system prompt (<c>system_prompt + " &lt;Prompt Start&gt; " + prompt</c>) before Gemma; the
/// negative prompt is not.
/// </summary>
public sealed record Lumina2Request : IMaskedPromptRequest
{
    /// <summary>diffusers' default system prompt (<c>Lumina2Pipeline.system_prompt</c>).</summary>
    public const string DefaultSystemPrompt =
        "You are an assistant designed to generate superior images with the superior degree of image-text alignment based on textual prompts or user prompts.";

    /// <summary>The prompt(s); give these or <see cref="PromptEmbeds"/>.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>The negative prompt(s) for classifier-free guidance; null is diffusers' default <c>""</c>. Not together
    /// with <see cref="NegativePromptEmbeds"/>.</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Denoising steps (diffusers' default 30).</summary>
    public int NumInferenceSteps { get; init; } = 30;

    /// <summary>Custom sigmas, one per step (diffusers' default: <c>linspace(1, 1 / steps, steps)</c>), shifted by the
    /// scheduler.</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>Classifier-free guidance scale; 1 or below disables guidance (diffusers' default 4.0).</summary>
    public double GuidanceScale { get; init; } = 4.0;

    /// <summary>diffusers' <c>cfg_trunc_ratio</c>: guidance runs only while <c>(step + 1) / steps</c> is at most this
    /// (1.0, the default, never cuts it off; Lumina-Image 2.0's examples use 0.25).</summary>
    public double CfgTruncRatio { get; init; } = 1.0;

    /// <summary>diffusers' <c>cfg_normalization</c> (default true): the guided prediction rescaled to the conditional
    /// prediction's norm along the last (width) axis.</summary>
    public bool CfgNormalization { get; init; } = true;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Output height in pixels, a multiple of 16; null is the transformer's sample_size x 8 (1024).</summary>
    public int? Height { get; init; }

    /// <summary>Output width in pixels, a multiple of 16; null is the transformer's sample_size x 8 (1024).</summary>
    public int? Width { get; init; }

    /// <summary>The noise generator (CPU generators reproduce PyTorch's draws).</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), instead of <see cref="Generator"/>.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [B, 16, H/8, W/8] instead of drawn noise.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>Gemma prompt embeddings [B, S, cap_feat_dim]; needs <see cref="PromptAttentionMask"/>.</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="PromptEmbeds"/> [B, S] (1 = token, 0 = padding).</summary>
    public Tensor? PromptAttentionMask { get; init; }

    /// <summary>Negative embeddings of <see cref="PromptEmbeds"/>' shape; needs <see cref="NegativePromptAttentionMask"/>.
    /// Repeated per image like the prompt's (diffusers leaves given negative embeddings unrepeated and fails with
    /// several images per prompt).</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="NegativePromptEmbeds"/>.</summary>
    public Tensor? NegativePromptAttentionMask { get; init; }

    /// <summary>The system prompt in front of every prompt; null is <see cref="DefaultSystemPrompt"/>.</summary>
    public string? SystemPrompt { get; init; }

    /// <summary>Gemma tokens per prompt, the system prompt included (diffusers' default 256, at most 512).</summary>
    public int MaxSequenceLength { get; init; } = 256;

    /// <summary>What to return: images, NHWC / NCHW tensors, or the final latents.</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>Called after every step (diffusers' <c>callback_on_step_end</c>); may replace the latents and the prompt
    /// embeddings, or interrupt.</summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}
