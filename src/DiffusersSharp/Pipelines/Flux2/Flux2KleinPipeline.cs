using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// FLUX.2 [klein] text-to-image and multi-reference editing (diffusers' <c>Flux2KleinPipeline</c>, v0.39); see
/// <see cref="Flux2KleinPipelineBase"/> for the loop. Prompts in
/// Qwen3's chat template -> the stacked hidden states of three Qwen3 layers, padded to max_sequence_length
/// (<see cref="Flux2KleinPromptEncoder"/>), or given embeddings, repeated per image -> noise drawn directly as patchified
/// latents [B, 4·C, H/16, W/16], packed to tokens with 4-axis positions (t, h, w, l) -> FlowMatchEuler steps (sigmas
/// <c>linspace(1, 1/N, N)</c>, mu from <c>compute_empirical_mu</c>) over the transformer, fed σ = t / 1000, the reference
/// images' normalised VAE latents appended to the image tokens at t = 10, 20, … and their predictions dropped; CFG (not on
/// step-distilled models) runs the negative text in a second forward and takes <c>neg + s · (pos − neg)</c> -> unpack,
/// <c>latents · sqrt(var + eps) + mean</c> with the VAE's batch-norm statistics, unpatchify, VAE decode.
/// </summary>
public sealed class Flux2KleinPipeline : Flux2KleinPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public Flux2KleinPipeline(Flux2KleinComponents components) : base(components) { }

    /// <summary>Loads a diffusers FLUX.2 [klein] pipeline folder or hub repo id (<see cref="Flux2KleinComponents.FromPretrained"/>).</summary>
    public static Flux2KleinPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = Flux2KleinComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new Flux2KleinPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image / reference-editing pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static Flux2KleinPipeline FromPipe(Flux2KleinPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new Flux2KleinPipeline(other.Components);
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public Flux2Output Generate(Flux2KleinRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        GenerateWithReferences(request, progress, cancellationToken);

    /// <summary>The output size of <paramref name="r"/>: its height and width, else the first reference image's encoded size
    /// (<see cref="Flux2ImageProcessor.ReferenceSize"/>), else 1024 × 1024.</summary>
    public (int Height, int Width) OutputSize(Flux2KleinRequest r) => ReferenceOutputSize(r);
}
