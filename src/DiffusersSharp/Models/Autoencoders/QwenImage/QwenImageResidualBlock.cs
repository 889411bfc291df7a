using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>QwenImageResidualBlock</c>: RMS norm, SiLU, causal 3×3×3 conv, RMS norm, SiLU, (dropout), causal 3×3×3
/// conv, plus the input (through a 1×1×1 causal conv when the channel count changes). Both convolutions use the frame cache.
/// </summary>
public sealed class QwenImageResidualBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly QwenImageRMSNorm norm1;
    private readonly QwenImageCausalConv3d conv1;
    private readonly QwenImageRMSNorm norm2;
    private readonly QwenImageCausalConv3d conv2;
    private readonly QwenImageCausalConv3d? conv_shortcut;
#pragma warning restore IDE1006

    /// <summary>Creates the block from <paramref name="inDim"/> to <paramref name="outDim"/> channels.</summary>
    public QwenImageResidualBlock(long inDim, long outDim, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageResidualBlock))
    {
        norm1 = new QwenImageRMSNorm(inDim, images: false, device, dtype);
        conv1 = new QwenImageCausalConv3d(inDim, outDim, 3, 1, device, dtype);
        norm2 = new QwenImageRMSNorm(outDim, images: false, device, dtype);
        conv2 = new QwenImageCausalConv3d(outDim, outDim, 3, 1, device, dtype);
        if (inDim != outDim) conv_shortcut = new QwenImageCausalConv3d(inDim, outDim, 1, 0, device, dtype);
        RegisterComponents();
    }

    /// <summary>Runs the block on <paramref name="x"/> [B, C, T, H, W] with the frame cache.</summary>
    internal Tensor forward(Tensor x, QwenImageFeatureCache cache)
    {
        using var scope = NewDisposeScope();
        var h = conv_shortcut?.forward(x) ?? x;
        // Each step's input is freed once the next has run (norm outputs are fresh: SiLU in place).
        var y = norm1.forward(x).silu_()
            .Consume(t => cache.Convolve(conv1, t))
            .Consume(t => norm2.forward(t).silu_())
            .Consume(t => cache.Convolve(conv2, t));
        return y.add_(h).MoveToOuterDisposeScope();
    }
}
