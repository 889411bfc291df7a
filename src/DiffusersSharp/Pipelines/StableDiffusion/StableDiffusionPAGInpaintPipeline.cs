namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// Inpainting with Stable Diffusion 1.x / 2.x and Perturbed-Attention Guidance (diffusers'
/// <c>StableDiffusionPAGInpaintPipeline</c>): white mask pixels are repainted as by
/// <see cref="StableDiffusionInpaintPipeline"/> (a 4- or 9-channel UNet), with PAG as in
/// <see cref="StableDiffusionPAGPipeline"/> (see <see cref="StableDiffusionPAGInpaintRequest"/>, whose defaults and
/// refusals follow diffusers' pipeline). As diffusers' constructor it fixes an outdated <c>clip_sample</c> in the
/// scheduler config (the text-to-image fix), not the plain inpainting pipeline's <c>skip_prk_steps</c>.
/// </summary>
public sealed class StableDiffusionPAGInpaintPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them) and, as diffusers' constructor, rewrites an outdated
    /// scheduler or UNet config in them (see <see cref="OutdatedConfigs"/>).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionPAGInpaintPipeline(StableDiffusionComponents components) : base(components, xl: false) =>
        components.FixOutdatedConfigs(OutdatedConfigs.TextAndImageToImage);

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionPAGInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionPAGInpaintPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), PAG layers included.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionPAGInpaintRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionPAGInpaintRequest), progress, cancellationToken);
}
