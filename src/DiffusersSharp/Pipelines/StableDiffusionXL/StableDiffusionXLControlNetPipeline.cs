using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>Text-to-image with SDXL steered by a ControlNet (diffusers' <c>StableDiffusionXLControlNetPipeline</c>): the control image's residuals
/// are added to the UNet's skip states and mid block, scaled, within a guidance window, optionally in guess mode.</summary>
public sealed class StableDiffusionXLControlNetPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold a ControlNet.</summary>
    /// <exception cref="ArgumentException">The components are of the other model family, or have no ControlNet.</exception>
    public StableDiffusionXLControlNetPipeline(StableDiffusionComponents components) : base(WithControlNets(components), xl: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id and a ControlNet folder or hub repo id beside it.</summary>
    public static StableDiffusionXLControlNetPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnet, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Loads a diffusers pipeline folder or hub repo id and several ControlNets beside it (diffusers'
    /// <c>MultiControlNetModel</c>; give the control images, and any per-ControlNet settings, in the same order).</summary>
    public static StableDiffusionXLControlNetPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionControlNetRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionControlNetRequest), progress, cancellationToken);
}
