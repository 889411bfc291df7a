using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' DC-AE <c>Encoder</c> (autoencoder_dc.py; this namespace keeps it apart from the KL VAEs' encoder):
/// <c>conv_in</c> (a 3×3 conv, or a <see cref="DCDownBlock2d"/> without shortcut when the first level has no layers),
/// one <c>down_blocks</c> entry per level holding its blocks (<see cref="ResBlock"/> with RMSNorm and SiLU, or
/// <see cref="EfficientViTBlock"/> with RMSNorm) and, but at the last level, a <see cref="DCDownBlock2d"/>; then
/// <c>conv_out</c> to the latent channels, plus (<c>out_shortcut</c>) the last map averaged over groups of channels.
/// </summary>
public sealed class Encoder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly nn.Module<Tensor, Tensor> conv_in;
    private readonly ModuleList<ModuleList<nn.Module<Tensor, Tensor>>> down_blocks;
    private readonly Conv2d conv_out;
#pragma warning restore IDE1006
    private readonly long? _outShortcutAverageGroupSize;

    /// <summary>Builds the encoder of <paramref name="config"/> (validated by the caller).</summary>
    public Encoder(AutoencoderDCConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(Encoder))
    {
        ArgumentNullException.ThrowIfNull(config);
        var channels = config.EncoderBlockOutChannels;
        var layers = config.EncoderLayersPerBlock;
        var blockTypes = config.EncoderBlockTypeList;
        int levels = channels.Length;
        bool pixelUnshuffle = config.DownsampleBlockType == "pixel_unshuffle";

        long firstWidth = layers[0] > 0 ? channels[0] : channels[1];
        conv_in = layers[0] > 0
            ? nn.Conv2d(config.InChannels, firstWidth, 3, stride: 1, padding: 1, device: device, dtype: dtype)
            : new DCDownBlock2d(config.InChannels, firstWidth, downsample: pixelUnshuffle, shortcut: false, device, dtype);

        down_blocks = new ModuleList<ModuleList<nn.Module<Tensor, Tensor>>>();
        for (int i = 0; i < levels; i++)
        {
            var level = new ModuleList<nn.Module<Tensor, Tensor>>();
            for (int j = 0; j < layers[i]; j++)
                level.Add(DCBlocks.Create(blockTypes[i], channels[i], config.AttentionHeadDim, "rms_norm", "silu",
                    config.EncoderQkvMultiscales[i], device, dtype));
            if (i < levels - 1 && layers[i] > 0)
                level.Add(new DCDownBlock2d(channels[i], channels[i + 1], downsample: pixelUnshuffle, shortcut: true, device, dtype));
            down_blocks.Add(level);
        }

        conv_out = nn.Conv2d(channels[^1], config.LatentChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (config.EncoderOutShortcut) _outShortcutAverageGroupSize = channels[^1] / config.LatentChannels;
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor hiddenStates)
    {
        // Each step's output is freed once the next has run (see Temporaries).
        var h = conv_in.forward(hiddenStates);
        foreach (var level in down_blocks)
            foreach (var block in level)
                h = h.Consume(block.forward);
        if (_outShortcutAverageGroupSize is not { } groupSize) return h.Consume(conv_out.forward);
        using var grouped = h.unflatten(1, [-1, groupSize]);
        using var averaged = grouped.mean([2L]);
        return h.Consume(x => conv_out.forward(x).add_(averaged));
    }
}
