using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>Image-to-image with SDXL steered by ControlNets (diffusers' <c>StableDiffusionXLControlNetImg2ImgPipeline</c>):
/// the image is encoded and noised to the timestep that <c>strength</c> selects (default 0.8), as in SDXL image-to-image
/// (with its aesthetic-score conditioning when the model asks for it), and the control image's residuals steer the steps
/// that run.</summary>
public sealed class StableDiffusionXLControlNetImg2ImgPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold a ControlNet (or several).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family, or have no ControlNet.</exception>
    public StableDiffusionXLControlNetImg2ImgPipeline(StableDiffusionComponents components) : base(WithControlNets(components), xl: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id and a ControlNet folder or hub repo id beside it.</summary>
    public static StableDiffusionXLControlNetImg2ImgPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnet, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Loads a diffusers pipeline folder or hub repo id and several ControlNets beside it (diffusers'
    /// <c>MultiControlNetModel</c>; give the control images, and any per-ControlNet settings, in the same order).</summary>
    public static StableDiffusionXLControlNetImg2ImgPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>); they must hold a ControlNet.</summary>
    public static StableDiffusionXLControlNetImg2ImgPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionControlNetImg2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionControlNetImg2ImgRequest), progress, cancellationToken);
}
