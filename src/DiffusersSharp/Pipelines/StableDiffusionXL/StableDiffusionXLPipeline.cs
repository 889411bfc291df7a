using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>Text-to-image with SDXL (diffusers' <c>StableDiffusionXLPipeline</c>): two text encoders and size / crop micro-conditioning;
/// <see cref="StableDiffusionRequest.DenoisingEnd"/> makes it the first half of the base + refiner ensemble.</summary>
public sealed class StableDiffusionXLPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionXLPipeline(StableDiffusionComponents components) : base(components, xl: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionXLPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionXLPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionRequest), progress, cancellationToken);
}
