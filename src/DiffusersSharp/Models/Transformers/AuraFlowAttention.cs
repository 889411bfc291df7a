using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The attention of AuraFlow's blocks: diffusers' <c>Attention</c> as the AuraFlow blocks build it (<c>bias=False</c>,
/// <c>out_bias=False</c>, <c>added_proj_bias=False</c>, <c>qk_norm="fp32_layer_norm"</c>, <c>context_pre_only=False</c>)
/// run by <c>AuraFlowAttnProcessor2_0</c>. Every projection is bias-free; q and k are normalised per head by a
/// parameterless <see cref="FP32LayerNorm"/> (eps 1e-5). With a context stream (the joint blocks) the text's q, k, v
/// (<c>add_*_proj</c>, normalised by <c>norm_added_q</c> / <c>norm_added_k</c>) go <b>before</b> the image's, one
/// <c>scaled_dot_product_attention</c> (scale 1/√head_dim) runs over both, and the two parts are split again and projected
/// by <c>to_out.0</c> and <c>to_add_out</c>; without one (the single blocks) it is self-attention. Not
/// <see cref="JointAttention"/>: that one's projections carry biases, its q / k norms are weighted RMSNorms, and it holds
/// SD3's PAG, IP-Adapter and key-bias paths that this processor does not have. diffusers' opt-in
/// <c>FusedAuraFlowAttnProcessor2_0</c> (after <c>fuse_qkv_projections</c>) computes the same products from concatenated
/// weights; it is not built here.
/// </summary>
public sealed class AuraFlowAttention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q, to_k, to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    private readonly Linear? add_q_proj, add_k_proj, add_v_proj, to_add_out;
    private readonly FP32LayerNorm norm_q, norm_k;
    private readonly FP32LayerNorm? norm_added_q, norm_added_k;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly int _headDim;

    /// <summary>
    /// Creates the attention of width <paramref name="dim"/> with <paramref name="heads"/> heads of
    /// <paramref name="headDim"/>; <paramref name="joint"/> adds the context projections (diffusers' <c>added_kv_proj_dim</c>).
    /// </summary>
    public AuraFlowAttention(long dim, int heads, int headDim, bool joint, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AuraFlowAttention))
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        _heads = heads;
        _headDim = headDim;
        long inner = (long)heads * headDim;
        to_q = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
        to_k = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
        to_v = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(new Linear(inner, dim, hasBias: false, device: device, dtype: dtype), nn.Dropout(0.0));
        norm_q = new FP32LayerNorm(headDim);
        norm_k = new FP32LayerNorm(headDim);
        if (joint)
        {
            add_q_proj = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
            add_k_proj = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
            add_v_proj = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
            to_add_out = new Linear(inner, dim, hasBias: false, device: device, dtype: dtype);
            norm_added_q = new FP32LayerNorm(headDim);
            norm_added_k = new FP32LayerNorm(headDim);
        }
        RegisterComponents();
    }

    /// <summary>Whether this attention has the text stream's projections.</summary>
    public bool IsJoint => add_q_proj is not null;

    /// <summary>[B, N, H·d] → [B, N, H, d], the processor's layout for the q / k norms and the concatenation.</summary>
    private Tensor Heads(Tensor x) => x.view(x.shape[0], -1, _heads, _headDim);

    /// <summary>
    /// Attends. <paramref name="x"/> [B, N, D] are image tokens (or the single blocks' whole sequence),
    /// <paramref name="context"/> [B, S, D] text tokens, null for self-attention. Returns the image output and the context
    /// output (null without a context). Every intermediate is freed before it returns.
    /// </summary>
    /// <exception cref="InvalidOperationException">A context was given to an attention without context projections.</exception>
    public (Tensor X, Tensor? Context) forward(Tensor x, Tensor? context)
    {
        if (context is not null && add_q_proj is null)
            throw new InvalidOperationException("This AuraFlow attention has no context projections (a single block's self-attention).");
        using var scope = NewDisposeScope();
        long batch = x.shape[0];
        var q = norm_q.forward(Heads(to_q.forward(x)));
        var k = norm_k.forward(Heads(to_k.forward(x)));
        var v = Heads(to_v.forward(x));
        long textLength = 0;
        if (context is not null)
        {
            textLength = context.shape[1];
            var cq = norm_added_q!.forward(Heads(add_q_proj!.forward(context)));
            var ck = norm_added_k!.forward(Heads(add_k_proj!.forward(context)));
            var cv = Heads(add_v_proj!.forward(context));
            // The processor's order: the text tokens first.
            q = torch.cat([cq, q], 1);
            k = torch.cat([ck, k], 1);
            v = torch.cat([cv, v], 1);
        }
        var o = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            .Consume(a => a.transpose(1, 2).reshape(batch, -1, (long)_heads * _headDim).to(q.dtype));
        Tensor? contextOut = null;
        if (context is not null)
        {
            contextOut = to_add_out!.forward(o.narrow(1, 0, textLength));
            o = o.narrow(1, textLength, o.shape[1] - textLength);
        }
        var output = to_out[0].forward(o);
        return (output.MoveToOuterDisposeScope(), contextOut?.MoveToOuterDisposeScope());
    }
}
