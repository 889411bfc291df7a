using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>QwenImageEncoder3d</c>: a causal conv in, per level <c>num_res_blocks</c> residual blocks then (except
/// the last level) a 2-D or 3-D downsampler, all in one flat <c>down_blocks</c> list, the mid block, RMS norm, SiLU and a
/// causal conv to 2 × z_dim moments. Runs one chunk of frames with the frame cache.
/// </summary>
public sealed class QwenImageEncoder3d : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly QwenImageCausalConv3d conv_in;
    private readonly ModuleList<nn.Module> down_blocks;
    private readonly QwenImageMidBlock mid_block;
    private readonly QwenImageRMSNorm norm_out;
    private readonly QwenImageCausalConv3d conv_out;
#pragma warning restore IDE1006

    /// <summary>Creates the encoder of <paramref name="config"/> (its output has 2 × z_dim channels).</summary>
    public QwenImageEncoder3d(AutoencoderKLQwenImageConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageEncoder3d))
    {
        ArgumentNullException.ThrowIfNull(config);
        long[] dims = [config.BaseDim, .. config.DimMult.Select(m => (long)config.BaseDim * m)];
        conv_in = new QwenImageCausalConv3d(config.InputChannels, dims[0], 3, 1, device, dtype);
        down_blocks = new ModuleList<nn.Module>();
        long outDim = dims[0];
        for (int i = 0; i < config.DimMult.Length; i++)
        {
            long inDim = dims[i];
            outDim = dims[i + 1];
            for (int j = 0; j < config.NumResBlocks; j++)
            {
                down_blocks.Add(new QwenImageResidualBlock(inDim, outDim, device, dtype));
                inDim = outDim;
            }
            if (i != config.DimMult.Length - 1)
                down_blocks.Add(new QwenImageResample(outDim, config.TemperalDownsample[i] ? "downsample3d" : "downsample2d", device, dtype));
        }
        mid_block = new QwenImageMidBlock(outDim, device, dtype);
        norm_out = new QwenImageRMSNorm(outDim, images: false, device, dtype);
        conv_out = new QwenImageCausalConv3d(outDim, 2L * config.ZDim, 3, 1, device, dtype);
        RegisterComponents();
    }

    /// <summary>Encodes one chunk of frames <paramref name="x"/> [B, C, T, H, W] with the frame cache.</summary>
    internal Tensor forward(Tensor x, QwenImageFeatureCache cache)
    {
        var y = cache.Convolve(conv_in, x);
        foreach (var layer in down_blocks)
            y = y.Consume(t => layer switch
            {
                QwenImageResidualBlock resnet => resnet.forward(t, cache),
                QwenImageResample resample => resample.forward(t, cache),
                _ => throw new InvalidOperationException($"Unexpected encoder layer {layer.GetName()}."),
            });
        return y.Consume(t => mid_block.forward(t, cache))
            .Consume(t => norm_out.forward(t).silu_())
            .Consume(t => cache.Convolve(conv_out, t));
    }
}
