namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Inpainting with FLUX.1-Kontext (diffusers' <c>FluxKontextInpaintPipeline</c>): Flux inpainting (strength, the known
/// region reset to the noised image latents after every step) at the image's Kontext size, with the image's posterior
/// mode as its latents and Kontext context tokens at every step: the reference image's when one is given, otherwise the
/// image's own, with ids (1, row, column). The masked-image latents diffusers encodes are never read (only their draw is
/// made, to leave the generator where diffusers leaves it).
/// </summary>
public sealed class FluxKontextInpaintPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxKontextInpaintPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux Kontext pipeline folder or hub repo id.</summary>
    public static FluxKontextInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxKontextInpaintPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A Kontext inpainting pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxKontextInpaintPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>
    /// Repaints <see cref="FluxImg2ImgRequest.Image"/> where <see cref="FluxInpaintRequest.MaskImage"/> is white, as the
    /// prompt (and <see cref="FluxKontextInpaintRequest.ImageReference"/>) say (diffusers' <c>__call__</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxKontextInpaintRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunInpaint(request, null, progress, cancellationToken);
}
