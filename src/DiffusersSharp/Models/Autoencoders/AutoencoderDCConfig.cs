using System.Text.Json.Serialization;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders.DC;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// The <c>config.json</c> of a diffusers <c>AutoencoderDC</c> (the DC-AE, Sana's deep-compression autoencoder). Defaults
/// are the Python constructor defaults (six levels of 128 / 256 / 512 / 512 / 1024 / 1024 channels, 32 latent channels,
/// ResBlocks only, pixel-unshuffle / pixel-shuffle resampling); Sana's <c>vae</c> folders
/// (mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers) set EfficientViT blocks on the last three levels, strided-conv
/// downsampling, interpolating upsampling and scaling_factor 0.41407.
/// </summary>
public sealed record AutoencoderDCConfig
{
    /// <summary>Image channels in and out.</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Channels of the latent space.</summary>
    public int LatentChannels { get; init; } = 32;

    /// <summary>Channels per head of the EfficientViT blocks' attention (heads = level channels / this).</summary>
    public int AttentionHeadDim { get; init; } = 32;

    /// <summary>Encoder block type, one for every level or one per level: "ResBlock" or "EfficientViTBlock".</summary>
    public OneOrMany<string> EncoderBlockTypes { get; init; } = "ResBlock";

    /// <summary>Decoder block type, one for every level or one per level: "ResBlock" or "EfficientViTBlock".</summary>
    public OneOrMany<string> DecoderBlockTypes { get; init; } = "ResBlock";

    /// <summary>Encoder channels of each level, from the image side.</summary>
    public int[] EncoderBlockOutChannels { get; init; } = [128, 256, 512, 512, 1024, 1024];

    /// <summary>Decoder channels of each level, from the image side.</summary>
    public int[] DecoderBlockOutChannels { get; init; } = [128, 256, 512, 512, 1024, 1024];

    /// <summary>Blocks per encoder level; 0 on the first level makes <c>conv_in</c> a downsampling block.</summary>
    public int[] EncoderLayersPerBlock { get; init; } = [2, 2, 2, 3, 3, 3];

    /// <summary>Blocks per decoder level; 0 on the first level makes <c>conv_out</c> an upsampling block.</summary>
    public int[] DecoderLayersPerBlock { get; init; } = [3, 3, 3, 3, 3, 3];

    /// <summary>Per encoder level, the extra kernel sizes of the EfficientViT attention's multi-scale q | k | v (may be empty).</summary>
    public int[][] EncoderQkvMultiscales { get; init; } = [[], [], [], [5], [5], [5]];

    /// <summary>Per decoder level, the extra kernel sizes of the EfficientViT attention's multi-scale q | k | v (may be empty).</summary>
    public int[][] DecoderQkvMultiscales { get; init; } = [[], [], [], [5], [5], [5]];

    /// <summary>"interpolate" (nearest-neighbour then conv); any other value, as in diffusers, is conv then pixel shuffle.</summary>
    public string UpsampleBlockType { get; init; } = "pixel_shuffle";

    /// <summary>"pixel_unshuffle" (conv then pixel unshuffle); any other value (Sana's "Conv"), as in diffusers, is a strided conv.</summary>
    public string DownsampleBlockType { get; init; } = "pixel_unshuffle";

    /// <summary>Decoder norm, one for every level or one per level: "rms_norm" or "batch_norm".</summary>
    public OneOrMany<string> DecoderNormTypes { get; init; } = "rms_norm";

    /// <summary>Decoder ResBlock activation, one for every level or one per level: silu, swish, gelu, relu or mish (any
    /// case, as diffusers lower-cases it), or null in a list for none.</summary>
    public OneOrMany<string?> DecoderActFns { get; init; } = "silu";

    /// <summary>Whether the encoder adds its last map, averaged over groups of channels, to its output.</summary>
    public bool EncoderOutShortcut { get; init; } = true;

    /// <summary>Whether the decoder adds the latents, each channel repeated, to its first map.</summary>
    public bool DecoderInShortcut { get; init; } = true;

    /// <summary>Activation between the decoder's <c>norm_out</c> and <c>conv_out</c>.</summary>
    public string DecoderConvActFn { get; init; } = "relu";

    /// <summary>Latents are multiplied by this before the diffusion model and divided by it before decoding.</summary>
    public double ScalingFactor { get; init; } = 1.0;

    /// <summary>Pixels per latent along each axis: 2^(len(encoder_block_out_channels) - 1) (32 for Sana), diffusers'
    /// <c>spatial_compression_ratio</c> and the Sana pipelines' <c>vae_scale_factor</c>.</summary>
    [JsonIgnore]
    public int SpatialCompressionRatio => 1 << (EncoderBlockOutChannels.Length - 1);

    /// <summary>The encoder's block type of each level.</summary>
    [JsonIgnore]
    public string[] EncoderBlockTypeList => EncoderBlockTypes.Expand(EncoderBlockOutChannels.Length, "encoder_block_types");

    /// <summary>The decoder's block type of each level.</summary>
    [JsonIgnore]
    public string[] DecoderBlockTypeList => DecoderBlockTypes.Expand(DecoderBlockOutChannels.Length, "decoder_block_types");

    /// <summary>The decoder's norm type of each level.</summary>
    [JsonIgnore]
    public string[] DecoderNormTypeList => DecoderNormTypes.Expand(DecoderBlockOutChannels.Length, "decoder_norm_types");

    /// <summary>The decoder's activation of each level, lower-cased (null: none).</summary>
    [JsonIgnore]
    public string?[] DecoderActFnList => DecoderActFns.Expand(DecoderBlockOutChannels.Length, "decoder_act_fns").Select(a => a?.ToLowerInvariant()).ToArray();

    /// <summary>Checks the config describes a model this port can build, before any weight is allocated.</summary>
    /// <exception cref="ArgumentException">A field is missing, out of range, of the wrong length, or names an unsupported
    /// block, norm or activation, or channel counts that the shortcuts cannot map onto each other.</exception>
    public void Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok) throw new ArgumentException("AutoencoderDC config: " + message);
        }
        Require(InChannels > 0 && LatentChannels > 0 && AttentionHeadDim > 0, "in_channels, latent_channels and attention_head_dim must be positive.");
        Require(DecoderConvActFn is not null && IsActivation(DecoderConvActFn), $"decoder_conv_act_fn '{DecoderConvActFn}' is not supported (silu, swish, gelu, relu, mish).");
        Side("encoder", EncoderBlockOutChannels, EncoderLayersPerBlock, EncoderQkvMultiscales, EncoderBlockTypes, "encoder_block_types");
        Side("decoder", DecoderBlockOutChannels, DecoderLayersPerBlock, DecoderQkvMultiscales, DecoderBlockTypes, "decoder_block_types");

        var encoderTypes = Expanded(() => EncoderBlockTypeList);
        var decoderTypes = Expanded(() => DecoderBlockTypeList);
        Require(DecoderNormTypes is not null, "decoder_norm_types is missing.");
        Require(DecoderActFns is not null, "decoder_act_fns is missing.");
        var norms = Expanded(() => DecoderNormTypeList);
        var acts = Expanded(() => DecoderActFnList);
        for (int i = 0; i < DecoderBlockOutChannels.Length; i++)
        {
            if (DecoderLayersPerBlock[i] == 0) continue; // diffusers builds no block, hence no norm, on such a level
            Require(DCNormalization.IsSupported(norms[i]),
                $"decoder_norm_types[{i}] '{norms[i]}' is not supported (rms_norm and batch_norm; diffusers' layer_norm normalises these maps over their width axis and runs only when the width equals the channels).");
            Require(decoderTypes[i] != "ResBlock" || acts[i] is null || IsActivation(acts[i]!),
                $"decoder_act_fns[{i}] '{acts[i]}' is not supported (silu, swish, gelu, relu, mish, or null for none).");
        }
        Heads("encoder", EncoderBlockOutChannels, EncoderLayersPerBlock, encoderTypes);
        Heads("decoder", DecoderBlockOutChannels, DecoderLayersPerBlock, decoderTypes);

        Require(!EncoderOutShortcut || EncoderBlockOutChannels[^1] % LatentChannels == 0,
            $"encoder_out_shortcut averages the last encoder level's {EncoderBlockOutChannels[^1]} channels in groups onto {LatentChannels} latent channels: they must divide it.");
        Require(!DecoderInShortcut || DecoderBlockOutChannels[^1] % LatentChannels == 0,
            $"decoder_in_shortcut repeats each of the {LatentChannels} latent channels onto the last decoder level's {DecoderBlockOutChannels[^1]}: they must divide it.");
        // The resampling blocks' own constructors check the channel ratios of their shortcuts and of pixel (un)shuffle.

        void Side(string side, int[] channels, int[] layersOrNull, int[][] multiscales, OneOrMany<string> types, string typesKey)
        {
            Require(types is not null, $"{typesKey} is missing.");
            Require(channels is { Length: > 0 } && channels.All(c => c > 0), $"{side}_block_out_channels must list at least one level, all positive.");
            Require(layersOrNull is not null && layersOrNull.Length == channels.Length,
                $"{side}_layers_per_block has {layersOrNull?.Length ?? 0} entries but {side}_block_out_channels has {channels.Length}.");
            var layers = layersOrNull!;
            Require(layers.All(n => n >= 0), $"{side}_layers_per_block must not be negative.");
            // diffusers' blocks of a later level expect the previous level's downsampling / upsampling block, which a
            // level without layers does not get; only a first level without layers (the f32c32-in / mix layout) is sound.
            Require(layers.Skip(1).All(n => n > 0), $"{side}_layers_per_block may be 0 on the first level only.");
            Require(layers[0] > 0 || channels.Length > 1, $"{side}_layers_per_block[0] = 0 needs a second level.");
            Require(multiscales is not null && multiscales.Length == channels.Length && multiscales.All(m => m is not null),
                $"{side}_qkv_multiscales has {multiscales?.Length ?? 0} entries but {side}_block_out_channels has {channels.Length}.");
            Require(multiscales!.All(m => m.All(k => k > 0 && k % 2 == 1)), $"{side}_qkv_multiscales kernel sizes must be odd and positive (the maps keep their size).");
        }

        void Heads(string side, int[] channels, int[] layers, string[] types)
        {
            for (int i = 0; i < channels.Length; i++)
            {
                Require(DCBlocks.IsKnown(types[i]), $"{side}_block_types[{i}] '{types[i]}' is not supported (ResBlock and EfficientViTBlock are).");
                Require(types[i] != "EfficientViTBlock" || layers[i] == 0 || channels[i] / AttentionHeadDim >= 1,
                    $"the {side}'s EfficientViTBlock level {i} has {channels[i]} channels, fewer than attention_head_dim {AttentionHeadDim}: no attention head.");
            }
        }

        static T Expanded<T>(Func<T> expand)
        {
            try
            {
                return expand();
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException)
            {
                throw new ArgumentException("AutoencoderDC config: " + e.Message, e);
            }
        }
    }

    /// <summary>Whether diffusers' <c>get_activation</c> knows <paramref name="name"/> (its <c>ACT2CLS</c>, after lower-casing).</summary>
    private static bool IsActivation(string name) => name.ToLowerInvariant() is "silu" or "swish" or "gelu" or "relu" or "mish";
}
