namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Image-to-image with Flux ControlNets (diffusers' <c>FluxControlNetImg2ImgPipeline</c>): <see cref="FluxImg2ImgPipeline"/>'s
/// run (the image encoded and noised to the timestep <c>strength</c> selects) with the control latents prepared as in
/// <see cref="FluxControlNetPipeline"/> (their posterior samples drawn before the image's) and the ControlNets' residuals
/// added over the steps that run. No negative prompt nor true CFG, as in diffusers.
/// </summary>
public sealed class FluxControlNetImg2ImgPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components, which must hold a ControlNet (<see cref="FluxComponents.ControlNets"/>).</summary>
    /// <exception cref="ArgumentException">The components have no ControlNet, or one does not fit the transformer.</exception>
    public FluxControlNetImg2ImgPipeline(FluxComponents components) : base(WithControlNets(components, nameof(FluxControlNetImg2ImgPipeline))) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id and a Flux ControlNet folder or hub repo id beside it.</summary>
    public static FluxControlNetImg2ImgPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(controlnet);
        return FromPretrained(model, [controlnet], options, cancellationToken);
    }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id and several Flux ControlNets beside it (diffusers'
    /// <c>FluxMultiControlNetModel</c>; give the control images, and any per-ControlNet settings, in the same order).</summary>
    public static FluxControlNetImg2ImgPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new FluxControlNetImg2ImgPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>); they must hold a ControlNet.</summary>
    public static FluxControlNetImg2ImgPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Generates images from <see cref="FluxImg2ImgRequest.Image"/> guided by the control images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxControlNetImg2ImgRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunImageToImage(request, request, progress, cancellationToken);
}
