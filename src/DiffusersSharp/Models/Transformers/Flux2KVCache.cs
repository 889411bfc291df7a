namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// All layers' reference-token caches of a <see cref="Flux2Transformer2DModel"/> (diffusers <c>Flux2KVCache</c>): one
/// <see cref="Flux2KVLayerCache"/> per double-stream and per single-stream block, and the number of reference tokens they
/// hold. <see cref="Flux2Transformer2DModel.ForwardKVExtract"/> creates and fills one;
/// <see cref="Flux2Transformer2DModel.ForwardKVCached"/> reads it. Disposing it frees the cached tensors.
/// </summary>
public sealed class Flux2KVCache : IDisposable
{
    /// <summary>Creates empty caches for <paramref name="numDoubleLayers"/> double-stream and
    /// <paramref name="numSingleLayers"/> single-stream blocks.</summary>
    public Flux2KVCache(int numDoubleLayers, int numSingleLayers)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(numDoubleLayers);
        ArgumentOutOfRangeException.ThrowIfNegative(numSingleLayers);
        DoubleBlockCaches = Enumerable.Range(0, numDoubleLayers).Select(_ => new Flux2KVLayerCache()).ToArray();
        SingleBlockCaches = Enumerable.Range(0, numSingleLayers).Select(_ => new Flux2KVLayerCache()).ToArray();
    }

    /// <summary>The double-stream blocks' caches, in block order.</summary>
    public IReadOnlyList<Flux2KVLayerCache> DoubleBlockCaches { get; }

    /// <summary>The single-stream blocks' caches, in block order.</summary>
    public IReadOnlyList<Flux2KVLayerCache> SingleBlockCaches { get; }

    /// <summary>The number of reference tokens the caches hold (0 when empty).</summary>
    public long NumRefTokens { get; internal set; }

    /// <summary>Whether every layer's cache has been filled.</summary>
    public bool IsPopulated => DoubleBlockCaches.All(c => c.IsPopulated) && SingleBlockCaches.All(c => c.IsPopulated);

    /// <summary>Frees every layer's tensors and sets <see cref="NumRefTokens"/> to 0 (diffusers' <c>clear</c>).</summary>
    public void Clear()
    {
        foreach (var cache in DoubleBlockCaches) cache.Clear();
        foreach (var cache in SingleBlockCaches) cache.Clear();
        NumRefTokens = 0;
    }

    /// <inheritdoc/>
    public void Dispose() => Clear();
}
