using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>diffusers' <c>QwenImageUpBlock</c>: <c>num_res_blocks + 1</c> residual blocks, then an optional upsampler
/// (whose 2-D convolution halves the channels).</summary>
public sealed class QwenImageUpBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<QwenImageResidualBlock> resnets;
    private readonly ModuleList<QwenImageResample>? upsamplers;
#pragma warning restore IDE1006

    /// <summary>Creates the block from <paramref name="inDim"/> to <paramref name="outDim"/> channels.</summary>
    public QwenImageUpBlock(long inDim, long outDim, int numResBlocks, string? upsampleMode, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QwenImageUpBlock))
    {
        resnets = new ModuleList<QwenImageResidualBlock>();
        for (int i = 0; i <= numResBlocks; i++)
        {
            resnets.Add(new QwenImageResidualBlock(inDim, outDim, device, dtype));
            inDim = outDim;
        }
        if (upsampleMode is not null) upsamplers = new ModuleList<QwenImageResample>(new QwenImageResample(outDim, upsampleMode, device, dtype));
        RegisterComponents();
    }

    /// <summary>Runs the block on <paramref name="x"/> [B, C, T, H, W] with the frame cache.</summary>
    internal Tensor forward(Tensor x, QwenImageFeatureCache cache)
    {
        var y = x;
        foreach (var resnet in resnets) y = y.Consume(t => resnet.forward(t, cache), borrowed: x);
        if (upsamplers is not null) y = y.Consume(t => upsamplers[0].forward(t, cache), borrowed: x);
        return y;
    }
}
