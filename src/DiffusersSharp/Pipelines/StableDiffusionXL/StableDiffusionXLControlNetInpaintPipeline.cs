using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>Inpainting with SDXL steered by ControlNets (diffusers' <c>StableDiffusionXLControlNetInpaintPipeline</c>): the
/// masked area is repainted as in SDXL inpainting (strength 0.9999 by default, denoising_start / denoising_end; a 4-channel
/// UNet blends the noised image outside the mask each step, a 9-channel one takes mask and masked-image latents), and the
/// ControlNets, given the latents alone, steer it.</summary>
public sealed class StableDiffusionXLControlNetInpaintPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold a ControlNet (or several).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family, or have no ControlNet.</exception>
    public StableDiffusionXLControlNetInpaintPipeline(StableDiffusionComponents components) : base(WithControlNets(components), xl: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id and a ControlNet folder or hub repo id beside it.</summary>
    public static StableDiffusionXLControlNetInpaintPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnet, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Loads a diffusers pipeline folder or hub repo id and several ControlNets beside it (diffusers'
    /// <c>MultiControlNetModel</c>; give the control images, and any per-ControlNet settings, in the same order).</summary>
    public static StableDiffusionXLControlNetInpaintPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>); they must hold a ControlNet.</summary>
    public static StableDiffusionXLControlNetInpaintPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionControlNetInpaintRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionControlNetInpaintRequest), progress, cancellationToken);
}
