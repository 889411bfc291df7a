namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Text-to-image with Flux.1 (diffusers' <c>FluxPipeline</c>): prompt -> CLIP-L pooled + T5 embeddings -> noise drawn at
/// [B, 16, 2·(H/16), 2·(W/16)] and packed into 2×2 patches -> flow-matching Euler steps over the transformer
/// (sigmas <c>linspace(1, 1/N, N)</c>, resolution-dependent shift mu; the guidance scale goes into the guidance embedding;
/// optional true CFG with a negative prompt) -> unpack -> VAE decode of <c>latents / scaling_factor + shift_factor</c>.
/// </summary>
public sealed class FluxPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public FluxPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id.</summary>
    public static FluxPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        RunTextToImage(request, null, progress, cancellationToken);
}
