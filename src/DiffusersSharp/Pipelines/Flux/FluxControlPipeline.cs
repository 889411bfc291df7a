namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Text-to-image with FLUX.1 structural control (diffusers' <c>FluxControlPipeline</c>; FLUX.1-Canny-dev, FLUX.1-Depth-dev): the
/// control image is resized to the output size, VAE-encoded with a posterior sample (drawn before the latents' noise, as
/// diffusers draws it), packed and appended to the packed latents' channels at every step. The transformer takes twice
/// the packed channels (in_channels 128); the latents have half of them (in_channels / 8 before packing).
/// </summary>
public sealed class FluxControlPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxControlPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux control pipeline folder or hub repo id (e.g. black-forest-labs/FLUX.1-Canny-dev).</summary>
    public static FluxControlPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxControlPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A control pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxControlPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>The control transformer's latents have half its channels: diffusers' <c>in_channels // 8</c> before packing.</summary>
    protected override int LatentChannels => Components.Transformer.Config.InChannels / 8;

    /// <summary>Generates images steered by <see cref="FluxControlRequest.ControlImage"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid, or the transformer is not a control transformer; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxControlRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunTextToImage(request, null, progress, cancellationToken);
}
