namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Text-to-image with Flux ControlNets (diffusers' <c>FluxControlNetPipeline</c>, InstantX-kind ControlNets; several are
/// its <c>FluxMultiControlNetModel</c>): each control image is resized to the output size, encoded by the VAE (a
/// posterior sample drawn with the request's generator before the noise, <c>(latents − shift) · scaling</c>) and packed
/// as the latents are; at every step each ControlNet sees the packed latents and its control latents, and the residuals,
/// times each ControlNet's conditioning scale inside its guidance window and summed over the ControlNets, go into the
/// transformer's double- and single-stream blocks.
/// </summary>
public sealed class FluxControlNetPipeline : FluxPipelineBase
{
    /// <inheritdoc />
    private protected override bool ConvertsT5PromptWithClipTokenizer => true;

    /// <summary>Wraps loaded components, which must hold a ControlNet (<see cref="FluxComponents.ControlNets"/>).</summary>
    /// <exception cref="ArgumentException">The components have no ControlNet, or one does not fit the transformer.</exception>
    public FluxControlNetPipeline(FluxComponents components) : base(WithControlNets(components, nameof(FluxControlNetPipeline))) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id and a Flux ControlNet folder or hub repo id beside it.</summary>
    public static FluxControlNetPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(controlnet);
        return FromPretrained(model, [controlnet], options, cancellationToken);
    }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id and several Flux ControlNets beside it (diffusers'
    /// <c>FluxMultiControlNetModel</c>; give the control images, and any per-ControlNet settings, in the same order).</summary>
    public static FluxControlNetPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new FluxControlNetPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>); they must hold a ControlNet.</summary>
    public static FluxControlNetPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Generates images guided by the control images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxControlNetRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunTextToImage(request, request, progress, cancellationToken);
}
