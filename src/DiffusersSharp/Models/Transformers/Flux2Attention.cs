using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The joint attention of FLUX.2's double-stream blocks (diffusers <c>Flux2Attention</c> with <c>Flux2AttnProcessor</c>):
/// q, k, v of the image tokens and (<c>added_kv_proj_dim</c>) of the text tokens, each with a per-head
/// <c>torch.nn.RMSNorm</c> on q and k, concatenated along the sequence <b>text first</b>, rotated with the rotary table of
/// that joint sequence, attended with <c>scaled_dot_product_attention</c> (scale 1/√head_dim, no mask) and split again;
/// <c>to_out.0</c> projects the image part, <c>to_add_out</c> the text part. FLUX.2 builds every projection without bias.
/// With KV arguments it is <c>Flux2KVAttnProcessor</c> (FLUX.2 [klein] KV's reference-token cache, see
/// <see cref="Flux2KVAttentionArgs"/>); without them that processor is the standard one.
/// </summary>
public sealed class Flux2Attention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q, to_k, to_v;
    private readonly RMSNorm norm_q, norm_k;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    private readonly RMSNorm? norm_added_q, norm_added_k;
    private readonly Linear? add_q_proj, add_k_proj, add_v_proj, to_add_out;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly int _headDim;

    /// <summary>
    /// Creates the attention for width <paramref name="queryDim"/> with <paramref name="heads"/> heads of
    /// <paramref name="dimHead"/>; <paramref name="addedKvProjDim"/> adds the text stream's projections.
    /// <paramref name="bias"/>, <paramref name="addedProjBias"/> and <paramref name="outBias"/> are diffusers' flags.
    /// </summary>
    public Flux2Attention(long queryDim, int heads, int dimHead, long? addedKvProjDim = null, bool bias = false, bool addedProjBias = true,
        bool outBias = true, double eps = 1e-5, Device? device = null, ScalarType? dtype = null) : base(nameof(Flux2Attention))
    {
        _heads = heads;
        _headDim = dimHead;
        long inner = (long)heads * dimHead;
        to_q = new Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_k = new Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_v = new Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        norm_q = RMSNorm.Torch(dimHead, device, dtype, eps);
        norm_k = RMSNorm.Torch(dimHead, device, dtype, eps);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(new Linear(inner, queryDim, hasBias: outBias, device: device, dtype: dtype), nn.Dropout(0.0));
        if (addedKvProjDim is long added)
        {
            norm_added_q = RMSNorm.Torch(dimHead, device, dtype, eps);
            norm_added_k = RMSNorm.Torch(dimHead, device, dtype, eps);
            add_q_proj = new Linear(added, inner, hasBias: addedProjBias, device: device, dtype: dtype);
            add_k_proj = new Linear(added, inner, hasBias: addedProjBias, device: device, dtype: dtype);
            add_v_proj = new Linear(added, inner, hasBias: addedProjBias, device: device, dtype: dtype);
            to_add_out = new Linear(inner, queryDim, hasBias: outBias, device: device, dtype: dtype);
        }
        RegisterComponents();
    }

    /// <summary>
    /// Attends. <paramref name="x"/> [B, N, D] are image tokens, <paramref name="context"/> [B, S, D] text tokens (null:
    /// self-attention of the image tokens); <paramref name="rotary"/> (cos, sin) [S + N, head_dim] is the joint sequence's
    /// table (text rows first). Returns the projected image output and the projected text output (null without text).
    /// </summary>
    public (Tensor X, Tensor? Context) forward(Tensor x, Tensor? context, (Tensor Cos, Tensor Sin)? rotary) => forward(x, context, rotary, null);

    /// <summary>The attention with diffusers' <c>Flux2KVAttnProcessor</c> when <paramref name="kv"/> is given.</summary>
    internal (Tensor X, Tensor? Context) forward(Tensor x, Tensor? context, (Tensor Cos, Tensor Sin)? rotary, Flux2KVAttentionArgs? kv)
    {
        using var scope = NewDisposeScope();
        var q = norm_q.forward(Heads(to_q.forward(x), _heads, _headDim));
        var k = norm_k.forward(Heads(to_k.forward(x), _heads, _headDim));
        var v = Heads(to_v.forward(x), _heads, _headDim);
        long s = 0;
        if (context is not null)
        {
            if (add_q_proj is null) throw new InvalidOperationException("This Flux2Attention has no text projections (added_kv_proj_dim is not set).");
            s = context.shape[1];
            var cq = norm_added_q!.forward(Heads(add_q_proj.forward(context), _heads, _headDim));
            var ck = norm_added_k!.forward(Heads(add_k_proj!.forward(context), _heads, _headDim));
            var cv = Heads(add_v_proj!.forward(context), _heads, _headDim);
            q = cat([cq, q], 2);
            k = cat([ck, k], 2);
            v = cat([cv, v], 2);
        }
        var o = RotaryAttention(q, k, v, rotary, kv);
        var imageOut = to_out[0].forward(o.narrow(1, s, o.shape[1] - s));
        var contextOut = context is null ? null : to_add_out!.forward(o.narrow(1, 0, s));
        return (imageOut.MoveToOuterDisposeScope(), contextOut?.MoveToOuterDisposeScope());
    }

    /// <summary>[B, N, H·d] → [B, H, N, d] (a view where the layout allows).</summary>
    internal static Tensor Heads(Tensor x, int heads, int headDim) => x.reshape(x.shape[0], x.shape[1], heads, headDim).transpose(1, 2);

    /// <summary>
    /// The processors' common core: q and k [B, H, S, d] rotated by <paramref name="rotary"/> (diffusers'
    /// <c>apply_rotary_emb</c>, float32 products, back in q's dtype), <c>scaled_dot_product_attention</c> without a mask,
    /// heads flattened back to [B, S, H·d] in q's dtype. With <paramref name="kv"/> the attention is the KV processors'
    /// (<see cref="Flux2KVAttentionArgs.Attend"/>).
    /// </summary>
    internal static Tensor RotaryAttention(Tensor q, Tensor k, Tensor v, (Tensor Cos, Tensor Sin)? rotary, Flux2KVAttentionArgs? kv = null)
    {
        using var scope = NewDisposeScope();
        if (rotary is { } rope)
        {
            q = FluxPosEmbed.Apply(q, rope);
            k = FluxPosEmbed.Apply(k, rope);
        }
        var o = kv is null ? nn.functional.scaled_dot_product_attention(q, k, v) : kv.Attend(q, k, v);
        return o.transpose(1, 2).reshape(o.shape[0], o.shape[2], o.shape[1] * o.shape[3]).to(q.dtype).MoveToOuterDisposeScope();
    }
}
