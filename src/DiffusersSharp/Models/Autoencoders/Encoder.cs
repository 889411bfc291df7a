using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' VAE <c>Encoder</c> (double_z): conv_in, one <see cref="DownEncoderBlock2D"/> per level (all but the last
/// downsample), mid block, GroupNorm, SiLU, conv_out to 2 x latent channels (mean | logvar).
/// </summary>
public sealed class Encoder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Conv2d conv_in;
    private readonly ModuleList<DownEncoderBlock2D> down_blocks;
    private readonly UNetMidBlock2D mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;
#pragma warning restore IDE1006

    /// <summary>Builds the encoder of <paramref name="config"/>.</summary>
    public Encoder(AutoencoderKLConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(Encoder))
    {
        var channels = config.BlockOutChannels;
        int groups = config.NormNumGroups;
        conv_in = nn.Conv2d(config.InChannels, channels[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        down_blocks = new ModuleList<DownEncoderBlock2D>();
        long output = channels[0];
        for (int i = 0; i < channels.Length; i++)
        {
            long input = output;
            output = channels[i];
            bool isFinal = i == channels.Length - 1;
            down_blocks.Add(new DownEncoderBlock2D(input, output, config.LayersPerBlock, groups, addDownsample: !isFinal, device, dtype));
        }
        mid_block = new UNetMidBlock2D(channels[^1], groups, config.MidBlockAddAttention, device, dtype);
        conv_norm_out = AffineGroupNorm.Create(groups, channels[^1], 1e-6, device, dtype);
        conv_out = nn.Conv2d(channels[^1], 2 * config.LatentChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        // Each stage's output is freed once the next has run (see Temporaries).
        var h = conv_in.forward(input);
        foreach (var block in down_blocks) h = h.Consume(block.forward);
        h = h.Consume(mid_block.forward);
        return h.Consume(conv_norm_out.forward).silu_().Consume(conv_out.forward);
    }
}
