using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One MMDiT block (diffusers <c>JointTransformerBlock</c>): AdaLN-Zero modulated joint attention and feed-forward on the
/// image stream and on the context stream. The last block is <c>context_pre_only</c>: its context is only modulated
/// (AdaLayerNormContinuous) to feed the attention, and the context stream ends there. Dual-attention blocks (SD3.5)
/// add a gated self-attention (<c>attn2</c>) on the image stream.
/// </summary>
public sealed class JointTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly nn.Module norm1; // AdaLayerNormZero or SD35AdaLayerNormZeroX
    private readonly nn.Module norm1_context; // AdaLayerNormZero or AdaLayerNormContinuous (last block)
    private readonly JointAttention attn;
    private readonly JointAttention? attn2;
    private readonly FeedForward ff;
    private readonly FeedForward? ff_context;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Whether this is the last block, whose context stream ends after the attention.</summary>
    public bool ContextPreOnly { get; }

    /// <summary>The block's attentions in diffusers' <c>attn_processors</c> order: <c>attn</c>, then <c>attn2</c> if any.</summary>
    internal IEnumerable<(string Name, JointAttention Attention)> Attentions()
    {
        yield return ("attn", attn);
        if (attn2 is not null) yield return ("attn2", attn2);
    }

    /// <summary>Whether this block runs the extra self-attention <c>attn2</c>.</summary>
    public bool UseDualAttention { get; }

    /// <summary>Creates a block of width <paramref name="dim"/>.</summary>
    public JointTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, bool contextPreOnly, bool qkRmsNorm,
        bool useDualAttention, Device? device = null, ScalarType? dtype = null) : base(nameof(JointTransformerBlock))
    {
        _dim = dim;
        ContextPreOnly = contextPreOnly;
        UseDualAttention = useDualAttention;
        norm1 = useDualAttention ? new SD35AdaLayerNormZeroX(dim, device, dtype) : new AdaLayerNormZero(dim, device, dtype);
        norm1_context = contextPreOnly
            ? new AdaLayerNormContinuous(dim, dim, eps: 1e-6, bias: true, device: device, dtype: dtype)
            : new AdaLayerNormZero(dim, device, dtype);
        attn = new JointAttention(dim, numAttentionHeads, attentionHeadDim, joint: true, contextPreOnly, qkRmsNorm, device, dtype);
        if (useDualAttention)
            attn2 = new JointAttention(dim, numAttentionHeads, attentionHeadDim, joint: false, contextPreOnly: false, qkRmsNorm, device, dtype);
        ff = new FeedForward(dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        if (!contextPreOnly) ff_context = new FeedForward(dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the block on image tokens <paramref name="x"/> [B, N, D] and context <paramref name="context"/> [B, S, D]
    /// with the conditioning <paramref name="temb"/> [B, D]. Returns the new context (null after the last block) and
    /// the new image tokens. <paramref name="keyBias"/>, <paramref name="ip"/>: see <see cref="JointAttention.forward"/>
    /// (the IP-Adapter tokens go to <c>attn</c> and <c>attn2</c>, as diffusers' joint_attention_kwargs do).
    /// </summary>
    public (Tensor? Context, Tensor X) forward(Tensor x, Tensor context, Tensor temb, Tensor? keyBias = null, (Tensor Hidden, Tensor Temb)? ip = null)
    {
        Tensor nx, gateMsa, shiftMlp, scaleMlp, gateMlp;
        Tensor? nx2 = null, gateMsa2 = null;
        if (norm1 is SD35AdaLayerNormZeroX dual)
        {
            var o = dual.forward(x, temb);
            (nx, gateMsa, shiftMlp, scaleMlp, gateMlp, nx2, gateMsa2) = (o.X, o.GateMsa, o.ShiftMlp, o.ScaleMlp, o.GateMlp, o.X2, o.GateMsa2);
        }
        else
        {
            var o = ((AdaLayerNormZero)norm1).forward(x, temb);
            (nx, gateMsa, shiftMlp, scaleMlp, gateMlp) = (o.X, o.GateMsa, o.ShiftMlp, o.ScaleMlp, o.GateMlp);
        }

        Tensor nc;
        AdaLayerNormZeroOutput? c = null;
        if (norm1_context is AdaLayerNormContinuous last) nc = last.forward(context, temb);
        else
        {
            c = ((AdaLayerNormZero)norm1_context).forward(context, temb);
            nc = c.Value.X;
        }

        var (ax, ac) = attn.forward(nx, nc, keyBias, ip: ip);
        x = AdaLayerNormZero.GatedResidual(x, gateMsa, ax);
        if (attn2 is not null)
            x = AdaLayerNormZero.GatedResidual(x, gateMsa2!, attn2.forward(nx2!, null, ip: ip).X);

        x = AdaLayerNormZero.GatedResidual(x, gateMlp, ff.forward(AdaLayerNormZero.Modulated(x, _dim, scaleMlp, shiftMlp)));

        if (c is not { } cz) return (null, x);
        context = AdaLayerNormZero.GatedResidual(context, cz.GateMsa, ac!);
        context = AdaLayerNormZero.GatedResidual(context, cz.GateMlp, ff_context!.forward(AdaLayerNormZero.Modulated(context, _dim, cz.ScaleMlp, cz.ShiftMlp)));
        return (context, x);
    }
}
