using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>QwenImageDecoder3d</c>: a causal conv in from z_dim, the mid block, one up block per level (the levels in
/// reverse; every level but the last upsamples, in time too where the encoder downsampled it), RMS norm, SiLU and a causal
/// conv to the image channels. Runs one frame with the frame cache.
/// </summary>
public sealed class QwenImageDecoder3d : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly QwenImageCausalConv3d conv_in;
    private readonly QwenImageMidBlock mid_block;
    private readonly ModuleList<QwenImageUpBlock> up_blocks;
    private readonly QwenImageRMSNorm norm_out;
    private readonly QwenImageCausalConv3d conv_out;
#pragma warning restore IDE1006

    /// <summary>Creates the decoder of <paramref name="config"/>.</summary>
    public QwenImageDecoder3d(AutoencoderKLQwenImageConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageDecoder3d))
    {
        ArgumentNullException.ThrowIfNull(config);
        int levels = config.DimMult.Length;
        long[] dims = [(long)config.BaseDim * config.DimMult[^1], .. config.DimMult.Reverse().Select(m => (long)config.BaseDim * m)];
        bool[] temporalUpsample = config.TemperalDownsample.Reverse().ToArray();
        conv_in = new QwenImageCausalConv3d(config.ZDim, dims[0], 3, 1, device, dtype);
        mid_block = new QwenImageMidBlock(dims[0], device, dtype);
        up_blocks = new ModuleList<QwenImageUpBlock>();
        long outDim = dims[0];
        for (int i = 0; i < levels; i++)
        {
            // After the first level the upsampler's Conv2d has halved the channels.
            long inDim = i > 0 ? dims[i] / 2 : dims[i];
            outDim = dims[i + 1];
            string? mode = i != levels - 1 ? (temporalUpsample[i] ? "upsample3d" : "upsample2d") : null;
            up_blocks.Add(new QwenImageUpBlock(inDim, outDim, config.NumResBlocks, mode, device, dtype));
        }
        norm_out = new QwenImageRMSNorm(outDim, images: false, device, dtype);
        conv_out = new QwenImageCausalConv3d(outDim, config.InputChannels, 3, 1, device, dtype);
        RegisterComponents();
    }

    /// <summary>Decodes one latent frame (or chunk) <paramref name="x"/> [B, z_dim, T, h, w] with the frame cache.</summary>
    internal Tensor forward(Tensor x, QwenImageFeatureCache cache)
    {
        var y = cache.Convolve(conv_in, x).Consume(t => mid_block.forward(t, cache));
        foreach (var block in up_blocks) y = y.Consume(t => block.forward(t, cache));
        return y.Consume(t => norm_out.forward(t).silu_()).Consume(t => cache.Convolve(conv_out, t));
    }
}
