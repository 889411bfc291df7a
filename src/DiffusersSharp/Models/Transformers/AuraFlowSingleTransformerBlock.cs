using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One single-stream AuraFlow block (diffusers <c>AuraFlowSingleTransformerBlock</c>) on the joined text + image sequence:
/// an AdaLN-Zero modulation (bias-free linear, float32 LayerNorm), self-attention (<see cref="AuraFlowAttention"/>), then
/// AuraFlow's own ordering: the gated attention output is added to the input and normalised (<c>norm2</c>), modulated,
/// fed through the SwiGLU feed-forward, gated, and added to the block's <b>input</b> (the attention sum itself is not kept
/// in the stream; only the feed-forward branch sees it).
/// </summary>
public sealed class AuraFlowSingleTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaLayerNormZero norm1;
    private readonly AuraFlowAttention attn;
    private readonly FP32LayerNorm norm2;
    private readonly AuraFlowFeedForward ff;
#pragma warning restore IDE1006

    /// <summary>Creates a block of width <paramref name="dim"/>.</summary>
    public AuraFlowSingleTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AuraFlowSingleTransformerBlock))
    {
        norm1 = new AdaLayerNormZero(dim, device, dtype, bias: false, fp32LayerNorm: true);
        attn = new AuraFlowAttention(dim, numAttentionHeads, attentionHeadDim, joint: false, device, dtype);
        norm2 = new FP32LayerNorm(dim);
        ff = new AuraFlowFeedForward(dim, 4 * dim, device, dtype);
        RegisterComponents();
    }

    /// <summary>Runs the block on <paramref name="x"/> [B, S + N, D] with the conditioning <paramref name="temb"/> [B, D].</summary>
    public Tensor forward(Tensor x, Tensor temb)
    {
        using var scope = NewDisposeScope();
        var m = norm1.forward(x, temb);
        var (attended, _) = attn.forward(m.X, null);
        return FeedForwardBranch(x, attended, m, norm2, ff).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The part of every AuraFlow block after the attention, for one stream: <c>h = norm2(residual + gate_msa · attn)</c>,
    /// <c>h = h · (1 + scale_mlp) + shift_mlp</c>, and <c>residual + gate_mlp · ff(h)</c>.
    /// </summary>
    internal static Tensor FeedForwardBranch(Tensor residual, Tensor attended, AdaLayerNormZeroOutput m, FP32LayerNorm norm2, AuraFlowFeedForward ff)
    {
        using var scope = NewDisposeScope();
        var h = AdaLayerNormZero.GatedResidual(residual, m.GateMsa, attended).Consume(norm2.forward);
        // The same products and sums as h * (1 + scale_mlp) + shift_mlp, in place on the norm's fresh output.
        h.mul_(1 + m.ScaleMlp.unsqueeze(1)).add_(m.ShiftMlp.unsqueeze(1));
        h = h.Consume(ff.forward);
        return AdaLayerNormZero.GatedResidual(residual, m.GateMlp, h).MoveToOuterDisposeScope();
    }
}
