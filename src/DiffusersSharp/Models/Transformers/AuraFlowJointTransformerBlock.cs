using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One AuraFlow MMDiT block (diffusers <c>AuraFlowJointTransformerBlock</c>): image and text streams each modulated by
/// an AdaLN-Zero (bias-free linear, float32 LayerNorm), one joint attention over [text; image]
/// (<see cref="AuraFlowAttention"/>), then per stream AuraFlow's post-attention branch (see
/// <see cref="AuraFlowSingleTransformerBlock"/>: norm2 of the gated attention sum, modulated SwiGLU feed-forward, gated,
/// added to the block's input). Unlike SD3's, no block is <c>context_pre_only</c>: every one returns both streams.
/// </summary>
public sealed class AuraFlowJointTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaLayerNormZero norm1, norm1_context;
    private readonly AuraFlowAttention attn;
    private readonly FP32LayerNorm norm2, norm2_context;
    private readonly AuraFlowFeedForward ff, ff_context;
#pragma warning restore IDE1006

    /// <summary>Creates a block of width <paramref name="dim"/>.</summary>
    public AuraFlowJointTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AuraFlowJointTransformerBlock))
    {
        norm1 = new AdaLayerNormZero(dim, device, dtype, bias: false, fp32LayerNorm: true);
        norm1_context = new AdaLayerNormZero(dim, device, dtype, bias: false, fp32LayerNorm: true);
        attn = new AuraFlowAttention(dim, numAttentionHeads, attentionHeadDim, joint: true, device, dtype);
        norm2 = new FP32LayerNorm(dim);
        ff = new AuraFlowFeedForward(dim, 4 * dim, device, dtype);
        norm2_context = new FP32LayerNorm(dim);
        ff_context = new AuraFlowFeedForward(dim, 4 * dim, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the block on image tokens <paramref name="x"/> [B, N, D] and text tokens <paramref name="context"/> [B, S, D]
    /// with the conditioning <paramref name="temb"/> [B, D]; returns the new text and image tokens (diffusers' order).
    /// </summary>
    public (Tensor Context, Tensor X) forward(Tensor x, Tensor context, Tensor temb)
    {
        using var scope = NewDisposeScope();
        var m = norm1.forward(x, temb);
        var mc = norm1_context.forward(context, temb);
        var (attended, contextAttended) = attn.forward(m.X, mc.X);
        var newX = AuraFlowSingleTransformerBlock.FeedForwardBranch(x, attended, m, norm2, ff);
        var newContext = AuraFlowSingleTransformerBlock.FeedForwardBranch(context, contextAttended!, mc, norm2_context, ff_context);
        return (newContext.MoveToOuterDisposeScope(), newX.MoveToOuterDisposeScope());
    }
}
