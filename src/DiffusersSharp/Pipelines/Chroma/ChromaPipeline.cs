namespace DiffusersSharp.Pipelines.Chroma;

/// <summary>
/// Text-to-image with Chroma (diffusers' <c>ChromaPipeline</c>; lodestones/Chroma1-HD, Chroma1-Base): T5 prompt embeddings
/// with Chroma's text mask, noise packed as FLUX's, flow-matching Euler steps (sigmas <c>linspace(1, 1/N, N)</c> with
/// FLUX's resolution-dependent shift) over the transformer with classifier-free guidance on a negative prompt (35 steps
/// and guidance 5.0 by default), VAE decode. See <see cref="ChromaPipelineBase"/> for the data flow.
/// </summary>
public sealed class ChromaPipeline : ChromaPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public ChromaPipeline(ChromaComponents components) : base(components) { }

    /// <summary>Loads a diffusers Chroma pipeline folder or hub repo id.</summary>
    public static ChromaPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = ChromaComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new ChromaPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static ChromaPipeline FromPipe(ChromaPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new(other.Components);
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public ChromaOutput Generate(ChromaRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Run(request, null, progress, cancellationToken);
}
