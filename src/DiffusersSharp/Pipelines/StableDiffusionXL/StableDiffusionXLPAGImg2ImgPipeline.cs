using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>
/// Image-to-image with SDXL and Perturbed-Attention Guidance (diffusers' <c>StableDiffusionXLPAGImg2ImgPipeline</c>): as
/// <see cref="StableDiffusionXLImg2ImgPipeline"/> (strength or denoising_start, aesthetic-score conditioning when the model
/// asks for it), with PAG as in <see cref="StableDiffusionXLPAGPipeline"/> (see <see cref="StableDiffusionPAGImg2ImgRequest"/>).
/// </summary>
public sealed class StableDiffusionXLPAGImg2ImgPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionXLPAGImg2ImgPipeline(StableDiffusionComponents components) : base(components, xl: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionXLPAGImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionXLPAGImg2ImgPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), PAG layers included.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionPAGImg2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionPAGImg2ImgRequest), progress, cancellationToken);
}
