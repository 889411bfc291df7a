using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.IPAdapters;

/// <summary>
/// The weights and scale of diffusers' <c>SD3IPAdapterJointAttnProcessor2_0</c> on one SD3 attention (<c>attn</c>, and
/// <c>attn2</c> of dual-attention blocks): <c>norm_ip</c> (an <see cref="AdaLayerNorm"/> on the image tokens, driven by the
/// Resampler's timestep embedding), bias-free <c>to_k_ip</c> / <c>to_v_ip</c>, and per-head RMSNorms <c>norm_q</c>,
/// <c>norm_k</c>, <c>norm_ip_k</c>. <see cref="Transformers.JointAttention"/> runs the second attention: the layer's own
/// query (un-normed, then <c>norm_q</c>) attends to its image keys (<c>norm_k</c>) followed by the IP-Adapter tokens'
/// keys (<c>norm_ip_k</c>), with their values; the result, times <see cref="Scale"/>, is added before <c>to_out</c>.
/// </summary>
public sealed class SD3IPAdapterJointAttnProcessor : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaLayerNorm norm_ip;
    private readonly Linear to_k_ip;
    private readonly Linear to_v_ip;
    private readonly RMSNorm norm_q;
    private readonly RMSNorm norm_k;
    private readonly RMSNorm norm_ip_k;
#pragma warning restore IDE1006

    /// <summary>Builds the processor weights for an attention of width <paramref name="hiddenSize"/> (diffusers' scale 0.5).</summary>
    public SD3IPAdapterJointAttnProcessor(long hiddenSize, long ipHiddenStatesDim, long headDim, long timestepsEmbDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SD3IPAdapterJointAttnProcessor))
    {
        norm_ip = new AdaLayerNorm(timestepsEmbDim, ipHiddenStatesDim * 2, eps: 1e-6, device, dtype);
        to_k_ip = new Linear(ipHiddenStatesDim, hiddenSize, hasBias: false, device: device, dtype: dtype);
        to_v_ip = new Linear(ipHiddenStatesDim, hiddenSize, hasBias: false, device: device, dtype: dtype);
        norm_q = new RMSNorm(headDim, 1e-6, device, dtype);
        norm_k = new RMSNorm(headDim, 1e-6, device, dtype);
        norm_ip_k = new RMSNorm(headDim, 1e-6, device, dtype);
        RegisterComponents();
    }

    /// <summary>The IP-Adapter scale (diffusers' <c>set_ip_adapter_scale</c>; 0.5 after loading, 0 skips the image attention).</summary>
    public double Scale { get; set; } = 0.5;

    /// <summary>
    /// The image attention of diffusers' processor, for a layer with <paramref name="heads"/> heads: <paramref name="query"/>,
    /// <paramref name="key"/>, <paramref name="value"/> [B, heads, N, head_dim] are the layer's own image projections before
    /// its q / k norms; <paramref name="ipHidden"/> [B', Q, D] and <paramref name="ipTemb"/> the Resampler's outputs.
    /// Returns [B, N, heads x head_dim] (already times <see cref="Scale"/>). As diffusers, the IP tokens are viewed as
    /// [B, -1, heads, head_dim], so with B = 1 all B' rows' tokens attend together (its skip-layer pass).
    /// </summary>
    internal Tensor Attend(Tensor query, Tensor key, Tensor value, Tensor ipHidden, Tensor ipTemb, int heads)
    {
        long batch = query.shape[0], headDim = query.shape[3];
        var normed = norm_ip.forward(ipHidden, ipTemb);
        Tensor Heads(Tensor t) => t.view(batch, -1, heads, headDim).transpose(1, 2);
        var ipKey = norm_ip_k.forward(Heads(to_k_ip.forward(normed)));
        var ipValue = Heads(to_v_ip.forward(normed));
        var q = norm_q.forward(query);
        var k = cat([norm_k.forward(key), ipKey], 2);
        var v = cat([value, ipValue], 2);
        var o = nn.functional.scaled_dot_product_attention(q, k, v);
        return o.transpose(1, 2).reshape(batch, -1, heads * headDim).to(q.dtype) * Scale;
    }
}
