namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>Inpainting with Stable Diffusion 1.x / 2.x (diffusers' <c>StableDiffusionInpaintPipeline</c>): white mask pixels are repainted. Takes a 4-channel UNet (the base model: the kept area is re-noised and blended in after each step) or a 9-channel inpainting UNet (latents, mask and masked-image latents side by side).</summary>
public sealed class StableDiffusionInpaintPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them) and, as diffusers' constructor, rewrites an outdated
    /// scheduler or UNet config in them (see <see cref="OutdatedConfigs"/>).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionInpaintPipeline(StableDiffusionComponents components) : base(components, xl: false) =>
        components.FixOutdatedConfigs(OutdatedConfigs.Inpaint);

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionInpaintPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionInpaintRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionInpaintRequest), progress, cancellationToken);
}
