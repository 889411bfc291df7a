using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One double-stream Flux block (diffusers <c>FluxTransformerBlock</c>): AdaLN-Zero modulated joint attention (text
/// tokens first, RMSNorm on q and k, rotary positions) and a tanh-GELU feed-forward, on the image stream and on the text
/// stream. In float16 the text stream is clipped to ±65504 at the end, as diffusers does. Built <c>pruned</c> it is
/// diffusers' <c>ChromaTransformerBlock</c>: no modulation layers (<c>norm1</c> / <c>norm1_context</c> are
/// <c>ChromaAdaLayerNormZeroPruned</c>, without weights); the model supplies each stream's six modulation vectors, and an
/// attention mask over the joint sequence may be given.
/// </summary>
public sealed class FluxTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaLayerNormZero? norm1;
    private readonly AdaLayerNormZero? norm1_context;
    private readonly JointAttention attn;
    private readonly FeedForward ff;
    private readonly FeedForward ff_context;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>
    /// Creates a block of width <paramref name="dim"/> = heads × head width; <paramref name="pruned"/> leaves out the
    /// modulation layers (Chroma: <see cref="forward"/> then takes the modulation itself).
    /// </summary>
    public FluxTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, Device? device = null, ScalarType? dtype = null,
        bool pruned = false) : base(nameof(FluxTransformerBlock))
    {
        _dim = dim;
        if (!pruned)
        {
            norm1 = new AdaLayerNormZero(dim, device, dtype);
            norm1_context = new AdaLayerNormZero(dim, device, dtype);
        }
        attn = new JointAttention(dim, numAttentionHeads, attentionHeadDim, joint: true, contextPreOnly: false, qkRmsNorm: true,
            device, dtype, contextFirst: true);
        ff = new FeedForward(dim, dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        ff_context = new FeedForward(dim, dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>The joint attention (its <c>processor</c> holds an IP-Adapter once one is loaded).</summary>
    internal JointAttention Attention => attn;

    // norm2 and norm2_context are LayerNorms without affine parameters (no checkpoint keys): AdaLayerNormZero.Modulated.

    /// <summary>
    /// Runs the block on image tokens <paramref name="x"/> [B, N, D] and text tokens <paramref name="context"/> [B, S, D]
    /// with the conditioning <paramref name="temb"/> and the rotary table of the joint sequence (text, then image).
    /// <paramref name="temb"/> is [B, D] (Flux: each stream's modulation layer projects it) or, for a pruned block, the
    /// modulation itself, [B, 12, D]: the image stream's six vectors, then the text stream's (diffusers' Chroma slices).
    /// Returns the new text and image tokens. <paramref name="ipHiddenStates"/> (the projected image tokens of each loaded
    /// IP-Adapter, see <see cref="FluxTransformer2DModel"/>) adds the IP-Adapter's image attention to the image stream
    /// after the feed-forward, as diffusers' <c>FluxIPAdapterAttnProcessor</c> path does; null or no adapter: none.
    /// <paramref name="attentionMask"/> (Chroma) is the attention's mask over the joint sequence (see <see cref="JointAttention.forward"/>).
    /// </summary>
    public (Tensor Context, Tensor X) forward(Tensor x, Tensor context, Tensor temb, (Tensor Cos, Tensor Sin) rotary,
        IReadOnlyList<Tensor>? ipHiddenStates = null, Tensor? attentionMask = null)
    {
        var n = norm1?.forward(x, temb) ?? AdaLayerNormZero.Pruned(x, temb.narrow(1, 0, 6));
        var c = norm1_context?.forward(context, temb) ?? AdaLayerNormZero.Pruned(context, temb.narrow(1, 6, 6));
        var (ax, ac, ip) = attn.ForwardWithIpAdapter(n.X, c.X, rotary, ipHiddenStates, attentionMask);

        x = AdaLayerNormZero.GatedResidual(x, n.GateMsa, ax);
        x = AdaLayerNormZero.GatedResidual(x, n.GateMlp, ff.forward(AdaLayerNormZero.Modulated(x, _dim, n.ScaleMlp, n.ShiftMlp)));
        if (ip is not null) x = x + ip;

        context = AdaLayerNormZero.GatedResidual(context, c.GateMsa, ac!);
        context = AdaLayerNormZero.GatedResidual(context, c.GateMlp, ff_context.forward(AdaLayerNormZero.Modulated(context, _dim, c.ScaleMlp, c.ShiftMlp)));
        if (context.dtype == ScalarType.Float16) context = context.clip(-65504, 65504);
        return (context, x);
    }
}
