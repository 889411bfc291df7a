namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// FLUX.1 structural control parameters (diffusers' <c>FluxControlPipeline.__call__</c>: FLUX.1-Canny-dev,
/// FLUX.1-Depth-dev): the text-to-image ones plus the control image (a Canny edge map or a depth map), without true CFG or
/// a negative prompt, which diffusers' control pipelines lack. Guidance 3.5 and 28 steps by default (BFL suggests 30 and
/// 50 for Canny, 10 and 30 for Depth).
/// </summary>
public record FluxControlRequest : FluxRequest
{
    /// <summary>The control image (RGB pixels), resized to the output size, VAE-encoded with a posterior sample and appended
    /// to the latents' channels at every step.</summary>
    public PipelineImage? ControlImage { get; init; }
}

/// <summary>
/// FLUX.1 structural control image-to-image parameters (diffusers' <c>FluxControlImg2ImgPipeline.__call__</c>): the
/// image-to-image ones (strength 0.6, guidance 7.0) plus the control image, without true CFG or a negative prompt.
/// </summary>
public record FluxControlImg2ImgRequest : FluxImg2ImgRequest
{
    /// <summary>The control image (RGB pixels), as in <see cref="FluxControlRequest.ControlImage"/>.</summary>
    public PipelineImage? ControlImage { get; init; }
}

/// <summary>
/// FLUX.1 structural control inpainting parameters (diffusers' <c>FluxControlInpaintPipeline.__call__</c>): the
/// inpainting ones (strength 0.6, guidance 7.0) plus the control image; no true CFG, no negative prompt, no given
/// latents and no padding_mask_crop, which diffusers' pipeline lacks or cannot run.
/// </summary>
public record FluxControlInpaintRequest : FluxInpaintRequest
{
    /// <summary>The control image (RGB pixels), as in <see cref="FluxControlRequest.ControlImage"/>.</summary>
    public PipelineImage? ControlImage { get; init; }
}
