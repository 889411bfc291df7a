namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Text-to-image with Stable Diffusion 3 / 3.5 and Perturbed-Attention Guidance (diffusers'
/// <c>StableDiffusion3PAGPipeline</c>): see <see cref="StableDiffusion3PAGRequest"/>. The transformer runs a third (without
/// classifier-free guidance, a second) batch part whose chosen joint attentions are perturbed, for this call only.
/// </summary>
public sealed class StableDiffusion3PAGPipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public StableDiffusion3PAGPipeline(StableDiffusion3Components components) : base(components) { }

    /// <summary>Loads a diffusers pipeline folder.</summary>
    public static StableDiffusion3PAGPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new StableDiffusion3PAGPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A PAG pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusion3PAGPipeline FromPipe(StableDiffusion3PipelineBase other) => new(other.Components);

    /// <inheritdoc />
    protected override int DefaultSteps => 28;

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), PAG layers included.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusion3Output Generate(StableDiffusion3PAGRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return TextToImage(request, () => CheckPagInputs(request, request.PagScale, request.PagAdaptiveScale, request.PagAppliedLayers),
            request.PagAppliedLayers, progress, cancellationToken);
    }
}
