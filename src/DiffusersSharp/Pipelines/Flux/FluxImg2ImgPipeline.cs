namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Image-to-image with Flux.1 (diffusers' <c>FluxImg2ImgPipeline</c>): the image is resized to the requested size (a
/// multiple of 16), encoded by the VAE (a posterior sample drawn with the request's generator, then
/// <c>(latents − shift) · scaling</c>), noised with <c>scale_noise</c> to the first timestep that <c>strength</c> keeps
/// (noise drawn after the posterior sample, as diffusers draws it), packed, and denoised over the rest of the schedule.
/// </summary>
public sealed class FluxImg2ImgPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxImg2ImgPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id.</summary>
    public static FluxImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxImg2ImgPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>An image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxImg2ImgPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Generates images from <see cref="FluxImg2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxImg2ImgRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunImageToImage(request, null, progress, cancellationToken);
}
