namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// ControlNet text-to-image parameters (diffusers' <c>FluxControlNetPipeline.__call__</c>): the text-to-image ones with
/// its defaults (guidance scale 7.0, 28 steps) plus the control images, the conditioning scales and the guidance windows.
/// True CFG runs as in <see cref="FluxPipeline"/> (diffusers' ControlNet pipeline turns it on for a negative prompt only,
/// not for negative embeddings alone). Not here: ControlNet-Union's <c>control_mode</c> (union ControlNets are refused
/// when loading), IP-Adapter inputs.
/// </summary>
public record FluxControlNetRequest : FluxRequest, IFluxControlNetRequest
{
    /// <summary>diffusers' Flux ControlNet pipelines' default guidance scale (7.0).</summary>
    public const double DefaultControlNetGuidanceScale = 7.0;

    /// <summary>A request with diffusers' FluxControlNetPipeline defaults.</summary>
    public FluxControlNetRequest() => GuidanceScale = DefaultControlNetGuidanceScale;

    /// <summary>
    /// The control image (RGB; resized to the output size and normalized to [-1, 1]), or a [B, 3, H, W] tensor in [-1, 1]
    /// of the output size, taken as is (diffusers skips preprocessing for tensors). One image is repeated to the batch.
    /// </summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>One control image per ControlNet, in order (several ControlNets); instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>The factor on the ControlNets' residuals (diffusers' <c>controlnet_conditioning_scale</c>, default 1.0).</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>One conditioning scale per ControlNet.</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>The fraction of the steps after which the ControlNets start (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps after which the ControlNets stop (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }
}

/// <summary>
/// ControlNet image-to-image parameters (diffusers' <c>FluxControlNetImg2ImgPipeline.__call__</c>): the image-to-image
/// ones (<see cref="FluxImg2ImgRequest.Image"/> is the start, strength 0.6, guidance scale 7.0, 28 steps) plus the
/// control images and their settings. diffusers' pipeline has no negative prompt nor true CFG: they are refused.
/// </summary>
public record FluxControlNetImg2ImgRequest : FluxImg2ImgRequest, IFluxControlNetRequest
{
    /// <summary>The control image, as <see cref="FluxControlNetRequest.ControlImage"/>.</summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>One control image per ControlNet, in order; instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>The factor on the ControlNets' residuals (default 1.0).</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>One conditioning scale per ControlNet.</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>The fraction of the steps run after which the ControlNets start (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps run after which the ControlNets stop (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }
}

/// <summary>
/// ControlNet inpainting parameters (diffusers' <c>FluxControlNetInpaintPipeline.__call__</c>): the inpainting ones
/// (<see cref="FluxImg2ImgRequest.Image"/>, <see cref="FluxInpaintRequest.MaskImage"/>, strength 0.6, guidance scale
/// 7.0, 28 steps) plus the control images and their settings. diffusers' pipeline has no negative prompt nor true CFG:
/// they are refused, and so is <see cref="FluxInpaintRequest.PaddingMaskCrop"/> (diffusers' pipeline crops the image but
/// never pastes the result back). Not here: <c>masked_image_latents</c>, as in <see cref="FluxInpaintRequest"/>.
/// </summary>
public record FluxControlNetInpaintRequest : FluxInpaintRequest, IFluxControlNetRequest
{
    /// <summary>The control image, as <see cref="FluxControlNetRequest.ControlImage"/>.</summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>One control image per ControlNet, in order; instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>The factor on the ControlNets' residuals (default 1.0).</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>One conditioning scale per ControlNet.</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>The fraction of the steps run after which the ControlNets start (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps run after which the ControlNets stop (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }
}

/// <summary>The ControlNet part of the three Flux ControlNet requests, as the shared pipeline code reads it.</summary>
internal interface IFluxControlNetRequest
{
    PipelineImage? ControlImage { get; }
    IReadOnlyList<PipelineImage>? ControlImages { get; }
    double ControlNetConditioningScale { get; }
    IReadOnlyList<double>? ControlNetConditioningScales { get; }
    double ControlGuidanceStart { get; }
    IReadOnlyList<double>? ControlGuidanceStarts { get; }
    double ControlGuidanceEnd { get; }
    IReadOnlyList<double>? ControlGuidanceEnds { get; }
}
