using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// How a FLUX.2 [klein] pipeline's denoising loop gets one step's transformer prediction of the image tokens: the standard
/// pipelines append the reference tokens to every forward (<see cref="Flux2AppendedReferenceForward"/>), the KV pipeline
/// caches their keys and values at step 0 (<see cref="Flux2KVReferenceForward"/>). Disposing frees what it holds.
/// </summary>
internal abstract class Flux2StepForward : IDisposable
{
    /// <summary>
    /// The velocity [B, N, C] of the image tokens <paramref name="latents"/> [B, N, C] (in the transformer's dtype) at
    /// step <paramref name="step"/>, σ <paramref name="sigma"/> [B], for the text <paramref name="text"/> with its position
    /// ids <paramref name="textIds"/>.
    /// </summary>
    public abstract Tensor Predict(int step, Tensor latents, Tensor sigma, Tensor text, Tensor textIds, CancellationToken ct);

    /// <inheritdoc/>
    public virtual void Dispose() { }
}
