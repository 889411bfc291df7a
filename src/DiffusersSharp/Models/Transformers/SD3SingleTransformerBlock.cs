using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The image-only block of SD3.5's ControlNets (diffusers <c>SD3SingleTransformerBlock</c>): AdaLN-Zero modulated
/// self-attention and feed-forward on the image tokens, no text stream.
/// </summary>
public sealed class SD3SingleTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaLayerNormZero norm1;
    private readonly JointAttention attn;
    private readonly FeedForward ff;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Creates a block of width <paramref name="dim"/>.</summary>
    public SD3SingleTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SD3SingleTransformerBlock))
    {
        _dim = dim;
        norm1 = new AdaLayerNormZero(dim, device, dtype);
        attn = new JointAttention(dim, numAttentionHeads, attentionHeadDim, joint: false, contextPreOnly: false, qkRmsNorm: false, device, dtype);
        ff = new FeedForward(dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Runs the block on image tokens <paramref name="x"/> [B, N, D] with the conditioning <paramref name="temb"/> [B, D].</summary>
    public Tensor forward(Tensor x, Tensor temb)
    {
        var o = norm1.forward(x, temb);
        x = x + o.GateMsa.unsqueeze(1) * attn.forward(o.X, null).X;
        var h = nn.functional.layer_norm(x, [_dim], eps: 1e-6) * (1 + o.ScaleMlp.unsqueeze(1)) + o.ShiftMlp.unsqueeze(1);
        return x + o.GateMlp.unsqueeze(1) * ff.forward(h);
    }
}
