using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Text-to-image with Stable Diffusion 3 / 3.5 (diffusers' <c>StableDiffusion3Pipeline</c>): prompt -> CLIP-L, CLIP-G,
/// T5 embeddings -> noise -> flow-matching Euler steps over the MMDiT (CFG-batched, optional skip-layer guidance) -> VAE.
/// </summary>
public sealed class StableDiffusion3Pipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public StableDiffusion3Pipeline(StableDiffusion3Components components) : base(components) { }

    /// <summary>Loads a diffusers pipeline folder.</summary>
    public static StableDiffusion3Pipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new StableDiffusion3Pipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusion3Pipeline FromPipe(StableDiffusion3PipelineBase other) => new(other.Components);

    /// <inheritdoc />
    protected override int DefaultSteps => 28;

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), or a PAG request (for
    /// <see cref="StableDiffusion3PAGPipeline"/>).</exception>
    public StableDiffusion3Output Generate(StableDiffusion3Request request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request is StableDiffusion3PAGRequest)
            throw new ArgumentException("A perturbed-attention guidance request is for StableDiffusion3PAGPipeline.", nameof(request));
        return TextToImage(request, () => null, null, progress, cancellationToken);
    }
}
