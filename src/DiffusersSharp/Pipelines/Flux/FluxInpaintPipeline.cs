namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Inpainting with Flux.1 (diffusers' <c>FluxInpaintPipeline</c>, the standard 64-channel transformer, not Flux Fill):
/// image-to-image where, after every step, the packed latents outside the mask (black) are reset to the image's latents
/// noised to the next timestep (the clean image latents after the last step), so only the white part is repainted.
/// The mask is resized to the latent size (nearest), repeated over the 16 latent channels and packed like the latents.
/// diffusers' <c>padding_mask_crop</c> (<see cref="FluxInpaintRequest.PaddingMaskCrop"/>) inpaints a crop around the mask, then pastes it back.
/// </summary>
public sealed class FluxInpaintPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxInpaintPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id.</summary>
    public static FluxInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxInpaintPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>An inpainting pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxInpaintPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Repaints <see cref="FluxImg2ImgRequest.Image"/> where <see cref="FluxInpaintRequest.MaskImage"/> is white (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxInpaintRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunInpaint(request, null, progress, cancellationToken);
}
