using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>
/// Inpainting with SDXL and Perturbed-Attention Guidance (diffusers' <c>StableDiffusionXLPAGInpaintPipeline</c>): as
/// <see cref="StableDiffusionXLInpaintPipeline"/>, with PAG as in <see cref="StableDiffusionXLPAGPipeline"/> (see
/// <see cref="StableDiffusionPAGInpaintRequest"/>). The PAG layers are perturbed for each call only: diffusers' pipeline,
/// which returns early for output_type "latent" before restoring the UNet's attention processors, leaves its PAG
/// processors on the UNet after such a call, a leak not reproduced here.
/// </summary>
public sealed class StableDiffusionXLPAGInpaintPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionXLPAGInpaintPipeline(StableDiffusionComponents components) : base(components, xl: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id.</summary>
    public static StableDiffusionXLPAGInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionXLPAGInpaintPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), PAG layers included.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionPAGInpaintRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionPAGInpaintRequest), progress, cancellationToken);
}
