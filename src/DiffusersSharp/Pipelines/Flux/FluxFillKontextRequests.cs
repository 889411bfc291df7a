namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Fill parameters (diffusers' <c>FluxFillPipeline.__call__</c>, FLUX.1-Fill-dev): the inpainting ones with Fill's
/// defaults: guidance scale 30, 50 steps, strength 1.0 (the whole schedule; below 1 the image latents are noised to the
/// first kept timestep, as in image-to-image). <see cref="FluxRequest.Latents"/> are packed [B, (H/16)·(W/16), 64] and
/// replace the noised image latents. Not here: diffusers' <c>masked_image_latents</c> (its call preprocesses
/// <c>image</c> unconditionally, so it cannot run without an image either).
/// </summary>
public record FluxFillRequest : FluxInpaintRequest
{
    /// <summary>diffusers' Fill default guidance scale (30).</summary>
    public const double DefaultFillGuidanceScale = 30.0;

    /// <summary>A request with diffusers' Fill defaults (the 50 steps are the pipeline's: <see cref="FluxRequest.NumInferenceSteps"/> null).</summary>
    public FluxFillRequest()
    {
        GuidanceScale = DefaultFillGuidanceScale;
        Strength = 1.0;
    }
}

/// <summary>
/// Kontext parameters (diffusers' <c>FluxKontextPipeline.__call__</c>, FLUX.1-Kontext-dev image editing): the
/// text-to-image ones (guidance 3.5, 28 steps, true CFG) plus the input image and diffusers' sizing. The output size is
/// the aspect ratio of <see cref="FluxRequest.Width"/> / <see cref="FluxRequest.Height"/> (default 1024 × 1024) scaled
/// to <see cref="MaxArea"/> pixels, rounded down to multiples of 16; the input image keeps its own size (or a preferred
/// Kontext resolution). There is no strength: the image conditions every step as extra tokens.
/// </summary>
public record FluxKontextRequest : FluxRequest
{
    /// <summary>
    /// The image to edit (RGB), or a [B, 16, h, w] latent tensor taken as already shifted and scaled VAE latents. Null
    /// generates from the prompt alone, as diffusers allows.
    /// </summary>
    public PipelineImage? Image { get; init; }

    /// <summary>The output's pixel area (default 1024²): diffusers' <c>max_area</c>.</summary>
    public int MaxArea { get; init; } = 1024 * 1024;

    /// <summary>
    /// diffusers' <c>_auto_resize</c> (default true): the input image is resized to the preferred Kontext resolution
    /// with the closest aspect ratio (<see cref="FluxKontextPipeline.PreferredResolutions"/>); false keeps its size,
    /// rounded down to multiples of 16.
    /// </summary>
    public bool AutoResize { get; init; } = true;
}

/// <summary>
/// Kontext inpainting parameters (diffusers' <c>FluxKontextInpaintPipeline.__call__</c>): the inpainting ones with
/// diffusers' defaults there (guidance 3.5, 28 steps, strength 1.0) plus the Kontext sizing and an optional reference
/// image. The output has the image's Kontext size (its own floored to multiples of 16, or with <see cref="AutoResize"/>
/// the preferred resolution of its aspect ratio): as in diffusers, <see cref="FluxRequest.Height"/>,
/// <see cref="FluxRequest.Width"/> and <see cref="MaxArea"/> are checked but do not change it. The image must be pixels
/// (not latents). <see cref="FluxRequest.Latents"/> are the noise, [B, 16, H/8, W/8] only (diffusers packs them itself).
/// <see cref="FluxInpaintRequest.PaddingMaskCrop"/> crops the resized image (and the reference) to the mask's region, as
/// diffusers does; the mask must have the image's Kontext size, and the result (at the image's size) is not pasted back,
/// as diffusers' Kontext inpainting returns it.
/// </summary>
public record FluxKontextInpaintRequest : FluxInpaintRequest
{
    /// <summary>A request with diffusers' Kontext inpainting defaults (guidance 3.5, strength 1.0).</summary>
    public FluxKontextInpaintRequest()
    {
        GuidanceScale = 3.5;
        Strength = 1.0;
    }

    /// <summary>
    /// diffusers' <c>image_reference</c>: an image (resized like the image, to its own Kontext size) or a [B, 16, h, w]
    /// latent tensor whose tokens are the context instead of the image's (what to paint into the masked region). Null: the
    /// image's own tokens are the context.
    /// </summary>
    public PipelineImage? ImageReference { get; init; }

    /// <summary>diffusers' <c>max_area</c> (default 1024²); checked, but the image's size gives the output's.</summary>
    public int MaxArea { get; init; } = 1024 * 1024;

    /// <summary>diffusers' <c>_auto_resize</c> (default true): the image and reference take the preferred Kontext resolution closest to their aspect ratio.</summary>
    public bool AutoResize { get; init; } = true;
}
