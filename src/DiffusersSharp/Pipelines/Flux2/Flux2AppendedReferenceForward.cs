using DiffusersSharp.Models.Transformers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// Flux2KleinPipeline's (and the inpainting pipeline's) step forward: the standard transformer forward with the reference
/// tokens, if any, appended after the image tokens at every step and their predictions dropped.
/// </summary>
internal sealed class Flux2AppendedReferenceForward(Flux2Transformer2DModel transformer, Tensor latentIds, Tensor? reference, Tensor? referenceIds)
    : Flux2StepForward
{
    private readonly Tensor _ids = referenceIds is null ? latentIds : cat([latentIds, referenceIds], 0);

    /// <inheritdoc/>
    public override Tensor Predict(int step, Tensor latents, Tensor sigma, Tensor text, Tensor textIds, CancellationToken ct)
    {
        var input = reference is null ? latents : cat([latents, reference], 1);
        return transformer.Forward(input, text, sigma, _ids, textIds, cancellationToken: ct).narrow(1, 0, latents.shape[1]);
    }
}
