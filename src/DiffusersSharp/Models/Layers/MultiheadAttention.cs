using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// PyTorch's <c>nn.MultiheadAttention(embed_dim, num_heads)</c> as diffusers' ControlNet-Union (self-attention) and
/// SigLIP's attention-pooling head (a query attending to the image tokens: <see cref="Attend"/>) use it: with bias, no
/// dropout, no mask, need_weights off. The packed projection
/// <c>in_proj_weight</c> [3E, E] / <c>in_proj_bias</c> [3E] gives q, k, v (in that order), heads of E / num_heads,
/// <c>scaled_dot_product_attention</c> with the default 1/sqrt(head) scale, then <c>out_proj</c>. State-dict keys equal
/// PyTorch's. The input is (L, N, E): attention runs along the FIRST dimension, for each of the N entries of the second
/// (PyTorch's sequence-first layout).
/// </summary>
public sealed class MultiheadAttention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter in_proj_weight;
    private readonly Parameter in_proj_bias;
    private readonly Linear out_proj;
#pragma warning restore IDE1006
    private readonly int _heads;

    /// <summary>Builds the layer (parameters uninitialised: they are loaded).</summary>
    /// <exception cref="ArgumentException"><paramref name="embedDim"/> is not a positive multiple of <paramref name="heads"/>.</exception>
    public MultiheadAttention(long embedDim, int heads, Device? device = null, ScalarType? dtype = null) : base(nameof(MultiheadAttention))
    {
        if (heads <= 0 || embedDim <= 0 || embedDim % heads != 0)
            throw new ArgumentException($"embed_dim ({embedDim}) must be a positive multiple of num_heads ({heads}).", nameof(embedDim));
        _heads = heads;
        var type = dtype ?? ScalarType.Float32;
        in_proj_weight = new Parameter(empty([3 * embedDim, embedDim], dtype: type, device: device));
        in_proj_bias = new Parameter(empty([3 * embedDim], dtype: type, device: device));
        out_proj = new Linear(embedDim, embedDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Self-attention over <paramref name="x"/> (L, N, E), along L; returns (L, N, E).</summary>
    public override Tensor forward(Tensor x)
    {
        Check(x, nameof(x));
        using var scope = NewDisposeScope();
        var qkv = Linear.Apply(x, in_proj_weight, in_proj_bias).chunk(3, -1);
        return Attention(qkv[0], qkv[1], qkv[2]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <paramref name="query"/> (Lq, N, E) attends to <paramref name="keyValue"/> (Lk, N, E), the same tensor as key and
    /// value (PyTorch's <c>attention(q, kv, kv)</c>: q projected by the first third of <c>in_proj</c>, k and v by the
    /// rest); returns (Lq, N, E).
    /// </summary>
    public Tensor Attend(Tensor query, Tensor keyValue)
    {
        Check(query, nameof(query));
        Check(keyValue, nameof(keyValue));
        if (query.shape[1] != keyValue.shape[1])
            throw new ArgumentException($"query and key/value must have the same batch N, got {query.shape[1]} and {keyValue.shape[1]}.", nameof(keyValue));
        using var scope = NewDisposeScope();
        long e = in_proj_weight.shape[1];
        var q = Linear.Apply(query, in_proj_weight.narrow(0, 0, e), in_proj_bias.narrow(0, 0, e));
        var kv = Linear.Apply(keyValue, in_proj_weight.narrow(0, e, 2 * e), in_proj_bias.narrow(0, e, 2 * e)).chunk(2, -1);
        return Attention(q, kv[0], kv[1]).MoveToOuterDisposeScope();
    }

    private void Check(Tensor x, string name)
    {
        if (x.dim() != 3 || x.shape[2] != in_proj_weight.shape[1])
            throw new ArgumentException($"MultiheadAttention takes (L, N, {in_proj_weight.shape[1]}), got [{string.Join(", ", x.shape)}].", name);
    }

    /// <summary>Projected q (Lq, N, E), k and v (Lk, N, E): scaled dot-product attention per head, then out_proj.</summary>
    private Tensor Attention(Tensor q, Tensor k, Tensor v)
    {
        long n = q.shape[1], e = q.shape[2], head = e / _heads;
        // (L, N, E) -> (N, heads, L, head): PyTorch's view(L, N * heads, head).transpose(0, 1).view(N, heads, L, head).
        Tensor Heads(Tensor t) => t.reshape(t.shape[0], n, _heads, head).permute(1, 2, 0, 3);
        var attended = nn.functional.scaled_dot_product_attention(Heads(q), Heads(k), Heads(v));
        var merged = attended.permute(2, 0, 1, 3).reshape(q.shape[0], n, e);
        return out_proj.forward(merged);
    }
}
