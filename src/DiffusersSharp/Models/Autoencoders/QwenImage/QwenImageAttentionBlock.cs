using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>QwenImageAttentionBlock</c>: per frame, single-head self-attention over the pixels (RMS norm, a 1×1
/// Conv2d to q, k, v, scaled dot-product attention, a 1×1 Conv2d projection), plus the input.
/// </summary>
public sealed class QwenImageAttentionBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly QwenImageRMSNorm norm;
    private readonly TorchSharp.Modules.Conv2d to_qkv;
    private readonly TorchSharp.Modules.Conv2d proj;
#pragma warning restore IDE1006

    /// <summary>Creates the block for <paramref name="dim"/> channels.</summary>
    public QwenImageAttentionBlock(long dim, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageAttentionBlock))
    {
        norm = new QwenImageRMSNorm(dim, images: true, device, dtype);
        to_qkv = nn.Conv2d(dim, dim * 3, 1, device: device, dtype: dtype);
        proj = nn.Conv2d(dim, dim, 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Attends within each frame of <paramref name="x"/> [B, C, T, H, W].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], c = x.shape[1], t = x.shape[2], h = x.shape[3], w = x.shape[4];
        var frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w);
        var qkv = to_qkv.forward(norm.forward(frames)).reshape(b * t, 1, c * 3, -1).permute(0, 1, 3, 2).contiguous();
        var parts = qkv.chunk(3, -1);
        var attended = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2]);
        var projected = proj.forward(attended.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w));
        return projected.view(b, t, c, h, w).permute(0, 2, 1, 3, 4).add(x).MoveToOuterDisposeScope();
    }
}
