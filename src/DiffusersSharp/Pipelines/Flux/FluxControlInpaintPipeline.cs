namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Inpainting with FLUX.1 structural control (diffusers' <c>FluxControlInpaintPipeline</c>; FLUX.1-Canny-dev,
/// FLUX.1-Depth-dev): image-to-image with the control image's packed latents appended to the latents' channels at every
/// step, and after every step the region outside the mask reset to the image latents noised to the next timestep (as
/// FluxInpaintPipeline). diffusers draws the masked image's posterior sample (which it never reads) first, then the
/// control image's, the image's and the noise.
/// </summary>
public sealed class FluxControlInpaintPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxControlInpaintPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux control pipeline folder or hub repo id (e.g. black-forest-labs/FLUX.1-Canny-dev).</summary>
    public static FluxControlInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxControlInpaintPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A control pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxControlInpaintPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>The control transformer's latents have half its channels: diffusers' <c>in_channels // 8</c> before packing.</summary>
    protected override int LatentChannels => Components.Transformer.Config.InChannels / 8;

    /// <summary>Repaints the white part of the mask, steered by <see cref="FluxControlInpaintRequest.ControlImage"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid, or the transformer is not a control transformer; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxControlInpaintRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunInpaint(request, null, progress, cancellationToken);
}
