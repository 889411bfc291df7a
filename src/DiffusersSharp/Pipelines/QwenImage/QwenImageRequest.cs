using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>
/// The parameters of a Qwen-Image text-to-image call, with diffusers' names and defaults (<c>QwenImagePipeline.__call__</c>,
/// v0.39). Prompt embeddings are [B, L, D] batches zero-padded to the longest prompt, with their masks (1 = a real token)
/// as the pipeline's text encoding gives them. Tensors passed in stay owned by the caller.
/// </summary>
public record QwenImageRequest
{
    /// <summary>The prompt(s), encoded by the components' Qwen2.5-VL text encoder in Qwen-Image's template (components
    /// without one take <see cref="PromptEmbeds"/> instead).</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>The negative prompt(s). CFG runs only when one is given (or negative embeddings) and
    /// <see cref="TrueCfgScale"/> is above 1; diffusers suggests " " to enable it without a real negative prompt.</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Prompt embeddings [B, L, joint_attention_dim] (the text encoder's last hidden states after the template's
    /// system turn), zero-padded to the longest prompt. The batch is their first size.</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="PromptEmbeds"/> [B, L] (non-zero = a real token). Null treats every token as real
    /// (diffusers warns); a mask of all ones is the same and is dropped, as diffusers does.</summary>
    public Tensor? PromptEmbedsMask { get; init; }

    /// <summary>Negative embeddings [B, L', joint_attention_dim] (their own length).</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="NegativePromptEmbeds"/> [B, L'].</summary>
    public Tensor? NegativePromptEmbedsMask { get; init; }

    /// <summary>diffusers' default <c>true_cfg_scale</c>.</summary>
    public const double DefaultTrueCfgScale = 4.0;

    /// <summary>
    /// Classifier-free guidance scale (diffusers' <c>true_cfg_scale</c>, default 4): above 1, with a negative prompt, each
    /// step also runs the negative text and uses <c>neg + s · (pos − neg)</c>, rescaled per token to the norm of the
    /// positive prediction.
    /// </summary>
    public double TrueCfgScale { get; init; } = DefaultTrueCfgScale;

    /// <summary>Image height in pixels, a multiple of 16 (default 1024).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels, a multiple of 16 (default 1024).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (default 50).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Custom sigmas, one per step (default <c>linspace(1, 1/N, N)</c>; the scheduler's shift is still applied).</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial packed latents [prompts × images, (H/16)·(W/16), 4·z_dim] instead of drawn noise; image-to-image
    /// takes them as the noised image latents to start from (no image encoding, no noise), as diffusers does.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>What to return (Latent: the final packed latents [B, (H/16)·(W/16), 4·z_dim], as diffusers returns them).</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>The token limit of the prompt embeddings after the template's system turn (diffusers' default 512, at most
    /// 1024); longer embeddings are cut.</summary>
    public int MaxSequenceLength { get; init; } = 512;

    /// <summary>
    /// Called after every step (diffusers' <c>callback_on_step_end</c>); may replace the latents and the prompt
    /// embeddings (<see cref="StepEndContext.PromptEmbeds"/>, same shape), change the CFG scale
    /// (<see cref="StepEndContext.GuidanceScale"/>) or interrupt.
    /// </summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}

/// <summary>
/// Image-to-image parameters (diffusers' <c>QwenImageImg2ImgPipeline.__call__</c>): the text-to-image ones plus the image
/// and strength. The image is resized to height × width (default 1024 × 1024, as diffusers).
/// </summary>
public record QwenImageImg2ImgRequest : QwenImageRequest
{
    /// <summary>The starting image: RGB, an 8-bit image or a [N, 3, H, W] tensor in [0, 1].</summary>
    public PipelineImage? Image { get; init; }

    /// <summary>diffusers' default strength of <c>QwenImageImg2ImgPipeline</c>.</summary>
    public const double DefaultStrength = 0.6;

    /// <summary>How much to change the image, in [0, 1]: the fraction of the schedule that is run (default 0.6).</summary>
    public double Strength { get; init; } = DefaultStrength;
}

/// <summary>
/// Inpainting parameters (diffusers' <c>QwenImageInpaintPipeline.__call__</c>): the image-to-image ones plus the mask
/// (white = repaint, black = keep), resized to height × width and binarized at 0.5. diffusers' default strength is 0.6.
/// Not supported: <c>masked_image_latents</c> (diffusers encodes it and never reads it).
/// </summary>
public record QwenImageInpaintRequest : QwenImageImg2ImgRequest
{
    /// <summary>The mask: an 8-bit image (converted to grayscale) or a [N, 1, H, W] tensor in [0, 1].</summary>
    public PipelineImage? MaskImage { get; init; }

    /// <summary>
    /// diffusers' <c>padding_mask_crop</c>: inpaint only the mask's bounding box grown by this many pixels (at the full
    /// height × width, resized in fill mode), then paste the result back onto the image where the mask is white. Needs
    /// 8-bit image and mask of one size and output type Image.
    /// </summary>
    public int? PaddingMaskCrop { get; init; }
}
