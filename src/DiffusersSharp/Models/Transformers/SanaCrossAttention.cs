using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Sana's cross-attention to the caption: diffusers' <c>Attention</c> as <c>SanaTransformerBlock</c> builds its
/// <c>attn2</c>, run by <c>SanaAttnProcessor2_0</c>: to_q from the image tokens, to_k / to_v from the projected caption
/// (all with biases), optional q / k RMSNorms over all heads (<c>qk_norm="rms_norm_across_heads"</c>) before the split
/// into heads, <c>scaled_dot_product_attention</c> (scale 1/√head_dim) under the caption's additive bias, to_out.0.
/// </summary>
public sealed class SanaCrossAttention : nn.Module
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
    /// Builds the layer: queries of <paramref name="queryDim"/> channels, keys / values from
    /// <paramref name="crossAttentionDim"/> channels, <paramref name="heads"/> × <paramref name="dimHead"/> inner width;
    /// <paramref name="outBias"/> is the bias of to_out.0; <paramref name="qkNorm"/> adds the q / k RMSNorms (eps 1e-5).
    /// </summary>
    public SanaCrossAttention(long queryDim, long crossAttentionDim, int heads, long dimHead, bool qkNorm, bool outBias = true,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaCrossAttention))
    {
        if (heads <= 0) throw new ArgumentOutOfRangeException(nameof(heads), heads, "heads must be positive.");
        _heads = heads;
        long inner = heads * dimHead;
        to_q = new Linear(queryDim, inner, hasBias: true, device: device, dtype: dtype);
        to_k = new Linear(crossAttentionDim, inner, hasBias: true, device: device, dtype: dtype);
        to_v = new Linear(crossAttentionDim, inner, hasBias: true, device: device, dtype: dtype);
        if (qkNorm)
        {
            norm_q = new RMSNorm(inner, 1e-5, device, dtype);
            norm_k = new RMSNorm(inner, 1e-5, device, dtype);
        }
        to_out = new ModuleList<Linear>(new Linear(inner, queryDim, hasBias: outBias, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>
    /// Attends from <paramref name="hiddenStates"/> [B, N, queryDim] to <paramref name="encoderHiddenStates"/> [B, S,
    /// crossAttentionDim], adding <paramref name="attentionBias"/> [B, 1, S] (0 keeps a caption token, -10000 drops it;
    /// null: all kept) to the scores of every head and query.
    /// </summary>
    public Tensor forward(Tensor hiddenStates, Tensor encoderHiddenStates, Tensor? attentionBias)
    {
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0];
        var query = to_q.forward(hiddenStates);
        var key = to_k.forward(encoderHiddenStates);
        var value = to_v.forward(encoderHiddenStates);
        if (norm_q is not null) query = query.Consume(norm_q.forward);
        if (norm_k is not null) key = key.Consume(norm_k.forward);
        long headDim = key.shape[^1] / _heads;
        query = query.view(batch, -1, _heads, headDim).transpose(1, 2);
        key = key.view(batch, -1, _heads, headDim).transpose(1, 2);
        value = value.view(batch, -1, _heads, headDim).transpose(1, 2);
        var mask = attentionBias?.reshape(batch, 1, 1, -1);
        var attended = nn.functional.scaled_dot_product_attention(query, key, value, mask)
            .Consume(a => a.transpose(1, 2).reshape(batch, -1, _heads * headDim).to(query.dtype));
        return attended.Consume(to_out[0].forward).MoveToOuterDisposeScope();
    }
}
