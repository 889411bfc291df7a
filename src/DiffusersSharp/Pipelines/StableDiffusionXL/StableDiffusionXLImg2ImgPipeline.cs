using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>Image-to-image with SDXL (diffusers' <c>StableDiffusionXLImg2ImgPipeline</c>): also the refiner's pipeline
/// (aesthetic-score conditioning, no first text encoder) and the second half of the base + refiner ensemble
/// (<see cref="StableDiffusionImg2ImgRequest.DenoisingStart"/>).</summary>
public sealed class StableDiffusionXLImg2ImgPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionXLImg2ImgPipeline(StableDiffusionComponents components) : base(components, xl: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionXLImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionXLImg2ImgPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionImg2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionImg2ImgRequest), progress, cancellationToken);
}
