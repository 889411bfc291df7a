namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>Text-to-image with Stable Diffusion 1.x / 2.x and Perturbed-Attention Guidance (diffusers' <c>StableDiffusionPAGPipeline</c>): see
/// <see cref="StableDiffusionPAGRequest"/>. The UNet runs a third (without classifier-free guidance, a second) batch part
/// whose chosen self-attention layers are the identity, for this call only.</summary>
public sealed class StableDiffusionPAGPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them) and, as diffusers' constructor, rewrites an outdated
    /// scheduler or UNet config in them (see <see cref="OutdatedConfigs"/>).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionPAGPipeline(StableDiffusionComponents components) : base(components, xl: false) =>
        components.FixOutdatedConfigs(OutdatedConfigs.TextAndImageToImage);

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionPAGPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionPAGPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), PAG layers included.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionPAGRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionPAGRequest), progress, cancellationToken);
}
