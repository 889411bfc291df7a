using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' VAE <c>Decoder</c> (group norm): conv_in, mid block, one <see cref="UpDecoderBlock2D"/> per level from the
/// deepest (layers_per_block + 1 resnets; all but the last upsample), GroupNorm, SiLU, conv_out.
/// </summary>
public sealed class Decoder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Conv2d conv_in;
    private readonly UNetMidBlock2D mid_block;
    private readonly ModuleList<UpDecoderBlock2D> up_blocks;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;
#pragma warning restore IDE1006

    /// <summary>Builds the decoder of <paramref name="config"/>.</summary>
    public Decoder(AutoencoderKLConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(Decoder))
    {
        var reversed = config.BlockOutChannels.Reverse().ToArray();
        int groups = config.NormNumGroups;
        conv_in = nn.Conv2d(config.LatentChannels, reversed[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        mid_block = new UNetMidBlock2D(reversed[0], groups, config.MidBlockAddAttention, device, dtype);
        up_blocks = new ModuleList<UpDecoderBlock2D>();
        long output = reversed[0];
        for (int i = 0; i < reversed.Length; i++)
        {
            long previous = output;
            output = reversed[i];
            bool isFinal = i == reversed.Length - 1;
            up_blocks.Add(new UpDecoderBlock2D(previous, output, config.LayersPerBlock + 1, groups, addUpsample: !isFinal, device, dtype));
        }
        conv_norm_out = AffineGroupNorm.Create(groups, config.BlockOutChannels[0], 1e-6, device, dtype);
        conv_out = nn.Conv2d(config.BlockOutChannels[0], config.OutChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        // Each stage's output is freed once the next has run (see Temporaries): at full resolution one is 2^27 values.
        var h = conv_in.forward(input).Consume(mid_block.forward);
        foreach (var block in up_blocks) h = h.Consume(block.forward);
        return h.Consume(conv_norm_out.forward).silu_().Consume(conv_out.forward);
    }
}
