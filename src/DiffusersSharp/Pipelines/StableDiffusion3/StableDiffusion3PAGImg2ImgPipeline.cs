namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Image-to-image with Stable Diffusion 3 / 3.5 and Perturbed-Attention Guidance (diffusers'
/// <c>StableDiffusion3PAGImg2ImgPipeline</c>): the image is encoded, noised to the timestep that strength selects, and
/// denoised from there with PAG as in <see cref="StableDiffusion3PAGPipeline"/> (see <see cref="StableDiffusion3PAGImg2ImgRequest"/>).
/// </summary>
public sealed class StableDiffusion3PAGImg2ImgPipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public StableDiffusion3PAGImg2ImgPipeline(StableDiffusion3Components components) : base(components) { }

    /// <summary>Loads a diffusers pipeline folder.</summary>
    public static StableDiffusion3PAGImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new StableDiffusion3PAGImg2ImgPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A PAG image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusion3PAGImg2ImgPipeline FromPipe(StableDiffusion3PipelineBase other) => new(other.Components);

    /// <inheritdoc />
    protected override int DefaultSteps => 50;

    /// <summary>Generates images from <see cref="StableDiffusion3Img2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), PAG layers included.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusion3Output Generate(StableDiffusion3PAGImg2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return ImageToImage(request, () => CheckPagInputs(request, request.PagScale, request.PagAdaptiveScale, request.PagAppliedLayers),
            request.PagAppliedLayers, progress, cancellationToken);
    }
}
