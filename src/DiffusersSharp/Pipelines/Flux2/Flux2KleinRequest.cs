using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// The parameters of a FLUX.2 [klein] call, with diffusers' names and defaults (<c>Flux2KleinPipeline.__call__</c>, v0.39):
/// text-to-image, or multi-reference editing with <see cref="Images"/>. Prompt embeddings are [B, L, joint_attention_dim]
/// as the pipeline's text encoding gives them (every prompt padded to max_sequence_length; no mask: the transformer attends
/// to the padding, as diffusers' does). Tensors passed in stay owned by the caller.
/// </summary>
public record Flux2KleinRequest
{
    /// <summary>The prompt(s), encoded by the components' Qwen3 text encoder (components without one take
    /// <see cref="PromptEmbeds"/> instead).</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>Prompt embeddings [B, L, joint_attention_dim] (Qwen3's hidden states of <see cref="TextEncoderOutLayers"/>,
    /// stacked per token). The batch is their first size.</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Negative embeddings [B or 1, L', joint_attention_dim] for CFG; without them the empty prompt "" is encoded,
    /// as diffusers does (it has no negative prompt text).</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>Reference images (diffusers' <c>image</c>): 8-bit images, each at least 64 pixels a side with an aspect ratio
    /// up to 8, scaled down to 1024 × 1024 pixels of area when larger, floored to multiples of 16 and centre-cropped there.
    /// The first one sets the output size when <see cref="Height"/> / <see cref="Width"/> are not given.</summary>
    public IReadOnlyList<ImageBuffer>? Images { get; init; }

    /// <summary>diffusers' default <c>guidance_scale</c>.</summary>
    public const double DefaultGuidanceScale = 4.0;

    /// <summary>
    /// Classifier-free guidance scale (default 4): above 1, on a model that is not step-distilled (model_index.json's
    /// <c>is_distilled</c> false: the "base" checkpoints), each step also runs the negative text and uses
    /// <c>neg + s · (pos − neg)</c>. The distilled models ignore it, as diffusers does.
    /// </summary>
    public double GuidanceScale { get; init; } = DefaultGuidanceScale;

    /// <summary>Image height in pixels (default: the first reference image's, else 1024); floored to a multiple of 16.</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels (default: the first reference image's, else 1024); floored to a multiple of 16.</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (default 50; the distilled FLUX.2 [klein] models use 4).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Custom sigmas, one per step (default <c>linspace(1, 1/N, N)</c>; the empirical shift is still applied).</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [prompts × images, in_channels, H/16, W/16] (patchified, normalised) instead of drawn noise.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>What to return (Latent: the final latents de-normalised and unpatchified, [B, latent_channels, H/8, W/8],
    /// as diffusers returns them).</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>The prompt's token count: prompts are padded (and cut) to it (diffusers' default 512).</summary>
    public int MaxSequenceLength { get; init; } = 512;

    /// <summary>The Qwen3 layers whose outputs are stacked into the prompt embeddings (diffusers' default 9, 18, 27;
    /// <c>hidden_states</c> indices: 0 is the token embeddings).</summary>
    public IReadOnlyList<int> TextEncoderOutLayers { get; init; } = [9, 18, 27];

    /// <summary>
    /// Called after every step (diffusers' <c>callback_on_step_end</c>); may replace the packed latents and the prompt
    /// embeddings (<see cref="StepEndContext.PromptEmbeds"/>, same shape), change the guidance scale or interrupt.
    /// </summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}

/// <summary>
/// Inpainting parameters (diffusers' <c>Flux2KleinInpaintPipeline.__call__</c>, v0.39): the text-to-image ones (without
/// <see cref="Flux2KleinRequest.Images"/>: the image itself conditions every step, and <see cref="ImageReference"/> may
/// add one more) plus the image, the mask (white = repaint) and the strength. The output has the image's size (scaled down
/// past 1024 × 1024 pixels, floored to multiples of 16): <see cref="Flux2KleinRequest.Height"/> and
/// <see cref="Flux2KleinRequest.Width"/> are not taken. diffusers' defaults: guidance 8, strength 0.8.
/// </summary>
public record Flux2KleinInpaintRequest : Flux2KleinRequest
{
    /// <summary>diffusers' default <c>guidance_scale</c> of the inpainting pipeline.</summary>
    public const double DefaultInpaintGuidanceScale = 8.0;

    /// <summary>diffusers' default <c>strength</c> of the inpainting pipeline.</summary>
    public const double DefaultStrength = 0.8;

    /// <summary>Creates a request with the inpainting pipeline's defaults (guidance 8).</summary>
    public Flux2KleinInpaintRequest() => GuidanceScale = DefaultInpaintGuidanceScale;

    /// <summary>The image to repaint (8-bit RGB); resized to its own size floored to multiples of 16.</summary>
    public ImageBuffer? Image { get; init; }

    /// <summary>The mask (8-bit; converted to grayscale, binarized at 0.5): white = repaint, black = keep.</summary>
    public ImageBuffer? MaskImage { get; init; }

    /// <summary>diffusers' <c>image_reference</c>: one more reference image, encoded as Flux2KleinPipeline's (centre-cropped)
    /// and appended after the image's own latents (t = 20).</summary>
    public ImageBuffer? ImageReference { get; init; }

    /// <summary>How much to change the masked region, in [0, 1]: the fraction of the schedule that is run (default 0.8).</summary>
    public double Strength { get; init; } = DefaultStrength;

    /// <summary>
    /// diffusers' <c>padding_mask_crop</c>: inpaint only the mask's bounding box grown by this many pixels (resized in fill
    /// mode to the image's size), then paste the result back onto the image where the mask is white. Output type Image only.
    /// </summary>
    public int? PaddingMaskCrop { get; init; }
}
