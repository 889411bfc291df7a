using DiffusersSharp.Models.Transformers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// Flux2KleinKVPipeline's step forward (diffusers v0.39): at step 0 the reference tokens go <b>before</b> the image tokens
/// through <see cref="Flux2Transformer2DModel.ForwardKVExtract"/> (modulated at <see cref="RefFixedTimestep"/>), which
/// caches their keys and values; every later step runs only the image tokens with
/// <see cref="Flux2Transformer2DModel.ForwardKVCached"/>. Without reference tokens every step is the standard forward.
/// Disposing frees the cache (diffusers' <c>kv_cache.clear()</c>).
/// </summary>
internal sealed class Flux2KVReferenceForward(Flux2Transformer2DModel transformer, Tensor latentIds, Tensor? reference, Tensor? referenceIds)
    : Flux2StepForward
{
    private Flux2KVCache? _cache;

    /// <summary>The reference tokens' modulation timestep (σ); the pipeline leaves diffusers' default 0.</summary>
    public double RefFixedTimestep { get; init; }

    /// <inheritdoc/>
    public override Tensor Predict(int step, Tensor latents, Tensor sigma, Tensor text, Tensor textIds, CancellationToken ct)
    {
        if (step == 0 && reference is not null)
        {
            _cache?.Dispose();
            var (sample, cache) = transformer.ForwardKVExtract(cat([reference, latents], 1), text, sigma, cat([referenceIds!, latentIds], 0), textIds,
                (int)reference.shape[1], RefFixedTimestep, cancellationToken: ct);
            _cache = cache;
            return sample;
        }
        return _cache is not null
            ? transformer.ForwardKVCached(latents, text, sigma, latentIds, textIds, _cache, cancellationToken: ct)
            : transformer.Forward(latents, text, sigma, latentIds, textIds, cancellationToken: ct);
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        _cache?.Dispose();
        _cache = null;
    }
}
