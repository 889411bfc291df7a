namespace DiffusersSharp.Pipelines.Chroma;

/// <summary>
/// Image-to-image with Chroma (diffusers' <c>ChromaImg2ImgPipeline</c>): the image is resized to the requested size (a
/// multiple of 16; default 1024), encoded by the VAE (a posterior sample drawn with the request's generator, then
/// <c>(latents − shift) · scaling</c>), noised with <c>scale_noise</c> to the first timestep that <c>strength</c> keeps
/// (default 0.9; noise drawn after the posterior sample), packed, and denoised over the rest of the schedule with
/// classifier-free guidance as <see cref="ChromaPipeline"/>.
/// </summary>
public sealed class ChromaImg2ImgPipeline : ChromaPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public ChromaImg2ImgPipeline(ChromaComponents components) : base(components) { }

    /// <summary>Loads a diffusers Chroma pipeline folder or hub repo id.</summary>
    public static ChromaImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = ChromaComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new ChromaImg2ImgPipeline(components);
    }

    /// <summary>An image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static ChromaImg2ImgPipeline FromPipe(ChromaPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new(other.Components);
    }

    /// <summary>Generates images from <see cref="ChromaImg2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public ChromaOutput Generate(ChromaImg2ImgRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return Run(request, request, progress, cancellationToken);
    }
}
