using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>CogView4TransformerBlock</c>: AdaLN-Zero modulation of both streams (<c>norm1</c>), one joint attention
/// over text + image (<c>attn1</c>), gated residuals, then a layer norm (no affine) modulated per stream and ONE
/// tanh-GELU feed-forward (<c>ff</c>) applied to each stream, gated into its residual.
/// </summary>
public sealed class CogView4TransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly CogView4AdaLayerNormZero norm1;
    private readonly CogView4Attention attn1;
    private readonly FeedForward ff;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Creates a block of width <paramref name="dim"/> modulated by a conditioning of width <paramref name="timeEmbedDim"/>.</summary>
    public CogView4TransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, long timeEmbedDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CogView4TransformerBlock))
    {
        _dim = dim;
        norm1 = new CogView4AdaLayerNormZero(timeEmbedDim, dim, device, dtype);
        attn1 = new CogView4Attention(dim, numAttentionHeads, attentionHeadDim, device, dtype);
        ff = new FeedForward(dim, dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Runs the block on image tokens <paramref name="x"/> [B, N, D] and text tokens <paramref name="context"/> [B, S, D]
    /// with the conditioning <paramref name="temb"/> [B, E] (already through SiLU) and the image tokens' rotary table.</summary>
    public (Tensor X, Tensor Context) forward(Tensor x, Tensor context, Tensor temb, (Tensor Cos, Tensor Sin) rotary)
    {
        using var scope = NewDisposeScope();
        var n = norm1.forward(x, context, temb);
        var (attnX, attnContext) = attn1.forward(n.X, n.Context, rotary);
        // Chunks: 4 gate_msa, 5 c_gate_msa, 6 shift_mlp, 7 c_shift_mlp, 8 scale_mlp, 9 c_scale_mlp, 10 gate_mlp, 11 c_gate_mlp.
        x = x + attnX * n.At(4);
        context = context + attnContext * n.At(5);
        var ffX = ff.forward(nn.functional.layer_norm(x, [_dim], eps: 1e-5) * (1 + n.At(8)) + n.At(6));
        var ffContext = ff.forward(nn.functional.layer_norm(context, [_dim], eps: 1e-5) * (1 + n.At(9)) + n.At(7));
        x = x + ffX * n.At(10);
        context = context + ffContext * n.At(11);
        return (x.MoveToOuterDisposeScope(), context.MoveToOuterDisposeScope());
    }
}
