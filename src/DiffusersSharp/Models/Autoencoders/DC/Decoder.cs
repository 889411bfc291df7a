using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' DC-AE <c>Decoder</c> (autoencoder_dc.py; this namespace keeps it apart from the KL VAEs' decoder):
/// <c>conv_in</c> from the latent channels plus (<c>in_shortcut</c>) the latents with each channel repeated; the
/// <c>up_blocks</c> from the last level to the first, each a <see cref="DCUpBlock2d"/> (but at the last level) followed
/// by its blocks (norm and activation per level); <c>norm_out</c> (an RMSNorm with a bias over the channels), the
/// activation <c>decoder_conv_act_fn</c>, and <c>conv_out</c> (a 3×3 conv, or a <see cref="DCUpBlock2d"/> without
/// shortcut when the first level has no layers).
/// </summary>
public sealed class Decoder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv_in;
    private readonly ModuleList<ModuleList<nn.Module<Tensor, Tensor>>> up_blocks;
    private readonly RMSNorm norm_out;
    private readonly nn.Module<Tensor, Tensor> conv_out;
#pragma warning restore IDE1006
    private readonly long? _inShortcutRepeats;
    private readonly string _convActivation;

    /// <summary>Builds the decoder of <paramref name="config"/> (validated by the caller).</summary>
    public Decoder(AutoencoderDCConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(Decoder))
    {
        ArgumentNullException.ThrowIfNull(config);
        var channels = config.DecoderBlockOutChannels;
        var layers = config.DecoderLayersPerBlock;
        var blockTypes = config.DecoderBlockTypeList;
        var normTypes = config.DecoderNormTypeList;
        var actFns = config.DecoderActFnList;
        int levels = channels.Length;
        bool interpolate = config.UpsampleBlockType == "interpolate";

        conv_in = nn.Conv2d(config.LatentChannels, channels[^1], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (config.DecoderInShortcut) _inShortcutRepeats = channels[^1] / config.LatentChannels;

        // up_blocks[i] is level i; diffusers builds them from the last level down and runs them in that order.
        var built = new ModuleList<nn.Module<Tensor, Tensor>>[levels];
        for (int i = levels - 1; i >= 0; i--)
        {
            var level = new ModuleList<nn.Module<Tensor, Tensor>>();
            if (i < levels - 1 && layers[i] > 0)
                level.Add(new DCUpBlock2d(channels[i + 1], channels[i], interpolate: interpolate, shortcut: true, device, dtype));
            for (int j = 0; j < layers[i]; j++)
                level.Add(DCBlocks.Create(blockTypes[i], channels[i], config.AttentionHeadDim, normTypes[i], actFns[i],
                    config.DecoderQkvMultiscales[i], device, dtype));
            built[i] = level;
        }
        up_blocks = new ModuleList<ModuleList<nn.Module<Tensor, Tensor>>>(built);

        long lastWidth = layers[0] > 0 ? channels[0] : channels[1];
        norm_out = RMSNorm.WithBias(lastWidth, 1e-5, device, dtype);
        _convActivation = config.DecoderConvActFn.ToLowerInvariant();
        conv_out = layers[0] > 0
            ? nn.Conv2d(lastWidth, config.InChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype)
            : new DCUpBlock2d(lastWidth, config.InChannels, interpolate: interpolate, shortcut: false, device, dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor hiddenStates)
    {
        // Each step's output is freed once the next has run (see Temporaries).
        var h = conv_in.forward(hiddenStates);
        if (_inShortcutRepeats is { } repeats)
        {
            using var repeated = hiddenStates.repeat_interleave(repeats, dim: 1, output_size: hiddenStates.shape[1] * repeats);
            h.add_(repeated);
        }
        for (int i = up_blocks.Count - 1; i >= 0; i--)
            foreach (var block in up_blocks[i])
                h = h.Consume(block.forward);
        h = h.Consume(x => DCNormalization.Apply(norm_out, x));
        h = h.Consume(x => DiffusersActivations.Apply(_convActivation, x));
        return h.Consume(conv_out.forward);
    }
}
