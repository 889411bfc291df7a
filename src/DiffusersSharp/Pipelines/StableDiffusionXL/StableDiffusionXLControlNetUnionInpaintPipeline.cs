using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>Inpainting with SDXL steered by a ControlNet-Union (diffusers' <c>StableDiffusionXLControlNetUnionInpaintPipeline</c>):
/// the masked area is repainted as in SDXL ControlNet inpainting (strength 0.9999 by default; the noised image blended
/// outside the mask each step; 4-channel UNets only, as diffusers'), steered by the control images, e.g. ProMax's repaint
/// mode on the image with the masked area blacked out.</summary>
public sealed class StableDiffusionXLControlNetUnionInpaintPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold a ControlNet-Union (or several).</summary>
    /// <exception cref="ArgumentException">The components are not SDXL, or hold no ControlNet-Union.</exception>
    public StableDiffusionXLControlNetUnionInpaintPipeline(StableDiffusionComponents components) : base(WithControlNetUnions(components), xl: true) { }

    /// <summary>Loads a diffusers SDXL pipeline folder or hub repo id and a ControlNet-Union folder or hub repo id beside it
    /// (e.g. xinsir/controlnet-union-sdxl-1.0, brad-twinkl/controlnet-union-sdxl-1.0-promax).</summary>
    public static StableDiffusionXLControlNetUnionInpaintPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default) => FromPretrained(model, [controlnet], options, cancellationToken);

    /// <summary>Loads a diffusers SDXL pipeline folder or hub repo id and several ControlNet-Unions beside it (diffusers'
    /// <c>MultiControlNetUnionModel</c>; give one control image and mode per model, in the same order).</summary>
    public static StableDiffusionXLControlNetUnionInpaintPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>); they must hold a ControlNet-Union.</summary>
    public static StableDiffusionXLControlNetUnionInpaintPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionControlNetUnionInpaintRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionControlNetUnionInpaintRequest), progress, cancellationToken);
}
