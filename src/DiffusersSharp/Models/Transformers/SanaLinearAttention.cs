using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Sana's linear self-attention: diffusers' <c>Attention</c> as <c>SanaTransformerBlock</c> builds its <c>attn1</c>,
/// run by <c>SanaLinearAttnProcessor2_0</c>. Keys and queries go through ReLU instead of a softmax, and each head
/// computes <c>(V·Kᵀ)·Q</c> (linear in the token count) in float32, normalised by <c>(1·Kᵀ)·Q</c>: a row of ones
/// appended to V gives that denominator in the same product. Optional q / k RMSNorms span all heads
/// (<c>qk_norm="rms_norm_across_heads"</c>, Sana 1.5 / Sprint). Keys: to_q / to_k / to_v, norm_q / norm_k, to_out.0.
/// </summary>
public sealed class SanaLinearAttention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly RMSNorm? norm_q;
    private readonly RMSNorm? norm_k;
    private readonly ModuleList<Linear> to_out;
#pragma warning restore IDE1006
    private readonly int _heads;

    /// <summary>
    /// Builds the layer on <paramref name="queryDim"/> channels with <paramref name="heads"/> × <paramref name="dimHead"/>
    /// inner width; <paramref name="bias"/> is the bias of to_q / to_k / to_v (to_out.0 always has one);
    /// <paramref name="qkNorm"/> adds the q / k RMSNorms (eps 1e-5, diffusers' Attention default) over the inner width.
    /// </summary>
    public SanaLinearAttention(long queryDim, int heads, long dimHead, bool bias, bool qkNorm, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaLinearAttention))
    {
        if (heads <= 0) throw new ArgumentOutOfRangeException(nameof(heads), heads, "heads must be positive.");
        _heads = heads;
        long inner = heads * dimHead;
        to_q = new Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_k = new Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_v = new Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        if (qkNorm)
        {
            norm_q = new RMSNorm(inner, 1e-5, device, dtype);
            norm_k = new RMSNorm(inner, 1e-5, device, dtype);
        }
        to_out = new ModuleList<Linear>(new Linear(inner, queryDim, hasBias: true, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>Self-attention over <paramref name="hiddenStates"/> [B, N, queryDim]; the result has its dtype.</summary>
    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var originalDtype = hiddenStates.dtype;
        var query = to_q.forward(hiddenStates);
        var key = to_k.forward(hiddenStates);
        var value = to_v.forward(hiddenStates);
        if (norm_q is not null) query = query.Consume(norm_q.forward);
        if (norm_k is not null) key = key.Consume(norm_k.forward);

        // Channels first, split into heads: q, v [B, H, d, N]; k [B, H, N, d]. ReLU, then float32, as the processor.
        query = query.transpose(1, 2).unflatten(1, [_heads, -1]).Consume(q => nn.functional.relu(q)).Consume(q => q.to(ScalarType.Float32));
        key = key.transpose(1, 2).unflatten(1, [_heads, -1]).transpose(2, 3).Consume(k => nn.functional.relu(k)).Consume(k => k.to(ScalarType.Float32));
        value = value.transpose(1, 2).unflatten(1, [_heads, -1]).Consume(v => v.to(ScalarType.Float32));

        // A row of ones under V: the last row of (V'·Kᵀ)·Q is the normaliser Σ_j k_j·q_i.
        value = value.Consume(v => nn.functional.pad(v, [0, 0, 0, 1], PaddingModes.Constant, 1.0));
        var scores = value.Consume(v => torch.matmul(v, key)); // [B, H, d + 1, d]
        var attended = scores.Consume(s => torch.matmul(s, query)); // [B, H, d + 1, N]
        long d = attended.shape[2] - 1;
        var result = attended.Consume(a => a.narrow(2, 0, d) / (a.narrow(2, d, 1) + 1e-15))
            .Consume(r => r.flatten(1, 2).transpose(1, 2).to(originalDtype));
        result = result.Consume(to_out[0].forward);
        // Float16 overflows to inf past 65504; diffusers clips the output there.
        if (originalDtype == ScalarType.Float16) result = result.Consume(r => r.clip(-65504, 65504));
        return result.MoveToOuterDisposeScope();
    }
}
