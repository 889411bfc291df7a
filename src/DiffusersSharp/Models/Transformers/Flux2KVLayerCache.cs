using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One attention layer's reference-token cache (diffusers <c>Flux2KVLayerCache</c>): the keys and values of the reference
/// image tokens after the q / k RMSNorm and the rotary embedding, stored by the "extract" forward and attended to by every
/// "cached" forward. Here they are [B, heads, reference tokens, head_dim] (diffusers keeps [B, tokens, heads, head_dim]; the
/// values are the same). The tensors belong to the cache, outside any dispose scope, until it is cleared or disposed.
/// </summary>
public sealed class Flux2KVLayerCache : IDisposable
{
    private Tensor? _k, _v;

    /// <summary>Whether the keys and values have been stored.</summary>
    public bool IsPopulated => _k is not null;

    /// <summary>The cached keys [B, heads, reference tokens, head_dim], or null before the extract forward.</summary>
    public Tensor? KRef => _k;

    /// <summary>The cached values [B, heads, reference tokens, head_dim], or null before the extract forward.</summary>
    public Tensor? VRef => _v;

    /// <summary>Stores copies of <paramref name="kRef"/> and <paramref name="vRef"/> (diffusers' <c>store</c> of clones),
    /// freeing what was stored before.</summary>
    internal void Store(Tensor kRef, Tensor vRef)
    {
        Clear();
        // Detached: the forward's dispose scopes must not free what later steps attend to.
        _k = kRef.clone().DetachFromDisposeScope();
        _v = vRef.clone().DetachFromDisposeScope();
    }

    /// <summary>The cached keys and values (diffusers' <c>get</c>).</summary>
    /// <exception cref="InvalidOperationException">Nothing was stored yet.</exception>
    internal (Tensor K, Tensor V) Get() =>
        _k is null ? throw new InvalidOperationException("KV cache has not been populated yet.") : (_k, _v!);

    /// <summary>Frees the cached tensors (diffusers' <c>clear</c>).</summary>
    public void Clear()
    {
        _k?.Dispose();
        _v?.Dispose();
        _k = _v = null;
    }

    /// <inheritdoc/>
    public void Dispose() => Clear();
}
