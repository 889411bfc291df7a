namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// Image-to-image with Stable Diffusion 1.x / 2.x and Perturbed-Attention Guidance (diffusers'
/// <c>StableDiffusionPAGImg2ImgPipeline</c>): the image is encoded, noised to the timestep that strength selects, and
/// denoised from there as by <see cref="StableDiffusionImg2ImgPipeline"/>, with PAG as in
/// <see cref="StableDiffusionPAGPipeline"/> (see <see cref="StableDiffusionPAGImg2ImgRequest"/>).
/// </summary>
public sealed class StableDiffusionPAGImg2ImgPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them) and, as diffusers' constructor, rewrites an outdated
    /// scheduler or UNet config in them (see <see cref="OutdatedConfigs"/>).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionPAGImg2ImgPipeline(StableDiffusionComponents components) : base(components, xl: false) =>
        components.FixOutdatedConfigs(OutdatedConfigs.TextAndImageToImage);

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionPAGImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionPAGImg2ImgPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), PAG layers included.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionPAGImg2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionPAGImg2ImgRequest), progress, cancellationToken);
}
