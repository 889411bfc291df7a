using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// The <c>config.json</c> of a diffusers <c>AutoencoderKLFlux2</c> (FLUX.2's VAE). Defaults are the Python constructor
/// defaults, which are FLUX.2's VAE: four levels of 128 / 256 / 512 / 512 channels, 32 latent channels, and a
/// BatchNorm over 2 x 2 patches of the latents whose running statistics the pipelines use to normalise latents.
/// </summary>
public sealed record AutoencoderKLFlux2Config
{
    /// <summary>Image channels the encoder takes.</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Image channels the decoder produces.</summary>
    public int OutChannels { get; init; } = 3;

    /// <summary>Encoder block types, one per level; only <c>DownEncoderBlock2D</c> exists for this model.</summary>
    public string[] DownBlockTypes { get; init; } = ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"];

    /// <summary>Decoder block types, one per decoder level; only <c>UpDecoderBlock2D</c> exists for this model.</summary>
    public string[] UpBlockTypes { get; init; } = ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"];

    /// <summary>Encoder channels of each level, from the image side.</summary>
    public int[] BlockOutChannels { get; init; } = [128, 256, 512, 512];

    /// <summary>Decoder channels of each level, from the image side; null means <see cref="BlockOutChannels"/>.</summary>
    public int[]? DecoderBlockOutChannels { get; init; }

    /// <summary>Resnet blocks per encoder level (the decoder uses one more).</summary>
    public int LayersPerBlock { get; init; } = 2;

    /// <summary>Activation of the resnets and of the output heads; "silu" (alias "swish") is supported.</summary>
    public string ActFn { get; init; } = "silu";

    /// <summary>Channels of the latent space.</summary>
    public int LatentChannels { get; init; } = 32;

    /// <summary>Groups of every GroupNorm.</summary>
    public int NormNumGroups { get; init; } = 32;

    /// <summary>Image size the model was trained at (diffusers' tile size; tiling is not implemented here).</summary>
    public int SampleSize { get; init; } = 1024;

    /// <summary>Whether pipelines should run this VAE in float32 when the rest is in half precision.</summary>
    public bool ForceUpcast { get; init; } = true;

    /// <summary>Whether a 1x1 <c>quant_conv</c> follows the encoder.</summary>
    public bool UseQuantConv { get; init; } = true;

    /// <summary>Whether a 1x1 <c>post_quant_conv</c> precedes the decoder.</summary>
    public bool UsePostQuantConv { get; init; } = true;

    /// <summary>Whether the mid blocks hold a self-attention layer.</summary>
    public bool MidBlockAddAttention { get; init; } = true;

    /// <summary>The <c>bn</c> epsilon: the pipelines' latent standard deviation is <c>sqrt(running_var + batch_norm_eps)</c>.</summary>
    public double BatchNormEps { get; init; } = 1e-4;

    /// <summary>The <c>bn</c> momentum (training only; kept for the module's twin).</summary>
    public double BatchNormMomentum { get; init; } = 0.1;

    /// <summary>Latent patch the <c>bn</c> statistics are over: it has <c>prod(patch_size) x latent_channels</c> channels.</summary>
    public int[] PatchSize { get; init; } = [2, 2];

    /// <summary>Pixels per latent along each axis: 2^(levels - 1), from the encoder's levels as diffusers' pipelines compute it (8 for FLUX.2).</summary>
    [JsonIgnore]
    public int VaeScaleFactor => 1 << (BlockOutChannels.Length - 1);

    /// <summary>The decoder's widths: <see cref="DecoderBlockOutChannels"/>, or <see cref="BlockOutChannels"/> when absent (diffusers' <c>or</c>).</summary>
    [JsonIgnore]
    public int[] EffectiveDecoderBlockOutChannels => DecoderBlockOutChannels is { Length: > 0 } d ? d : BlockOutChannels;

    /// <summary>Channels of <c>bn</c>: <c>prod(patch_size) x latent_channels</c>.</summary>
    [JsonIgnore]
    public int BatchNormChannels => PatchSize.Aggregate(1, (a, b) => a * b) * LatentChannels;

    /// <summary>Checks the config describes a model this port can build.</summary>
    /// <exception cref="ArgumentException">A field is out of range or names an unsupported block or activation.</exception>
    public void Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok) throw new ArgumentException("AutoencoderKLFlux2 config: " + message);
        }
        Require(InChannels > 0 && OutChannels > 0 && LatentChannels > 0, "in_channels, out_channels and latent_channels must be positive.");
        Require(BlockOutChannels is { Length: > 0 } && BlockOutChannels.All(c => c > 0), "block_out_channels must list at least one level, all positive.");
        var decoder = EffectiveDecoderBlockOutChannels;
        Require(decoder.All(c => c > 0), "decoder_block_out_channels must be positive.");
        Require(DownBlockTypes is not null && DownBlockTypes.Length == BlockOutChannels.Length,
            $"down_block_types has {DownBlockTypes?.Length ?? 0} entries but block_out_channels has {BlockOutChannels.Length}.");
        Require(UpBlockTypes is not null && UpBlockTypes.Length == decoder.Length,
            $"up_block_types has {UpBlockTypes?.Length ?? 0} entries but the decoder has {decoder.Length} levels (decoder_block_out_channels or block_out_channels).");
        Require(DownBlockTypes!.All(t => t == "DownEncoderBlock2D"), $"unsupported down block type in [{string.Join(", ", DownBlockTypes!)}]; only DownEncoderBlock2D is implemented.");
        Require(UpBlockTypes!.All(t => t == "UpDecoderBlock2D"), $"unsupported up block type in [{string.Join(", ", UpBlockTypes!)}]; only UpDecoderBlock2D is implemented.");
        Require(LayersPerBlock > 0, "layers_per_block must be positive.");
        Require(ActFn is "silu" or "swish", $"act_fn '{ActFn}' is not supported (only silu).");
        Require(NormNumGroups > 0 && BlockOutChannels.All(c => c % NormNumGroups == 0) && decoder.All(c => c % NormNumGroups == 0),
            $"every block_out_channels and decoder_block_out_channels entry must be divisible by norm_num_groups ({NormNumGroups}).");
        Require(SampleSize > 0, "sample_size must be positive.");
        Require(BatchNormEps > 0, "batch_norm_eps must be positive.");
        Require(PatchSize is { Length: 2 } && PatchSize.All(p => p > 0), "patch_size must be two positive integers.");
    }

    /// <summary>The <see cref="AutoencoderKLConfig"/> the shared <see cref="Encoder"/> is built from (the encoder's widths).</summary>
    internal AutoencoderKLConfig EncoderConfig() => Shared(BlockOutChannels);

    /// <summary>The <see cref="AutoencoderKLConfig"/> the shared <see cref="Decoder"/> is built from: diffusers builds the Decoder with the decoder's own widths.</summary>
    internal AutoencoderKLConfig DecoderConfig() => Shared(EffectiveDecoderBlockOutChannels);

    private AutoencoderKLConfig Shared(int[] widths) => new()
    {
        InChannels = InChannels,
        OutChannels = OutChannels,
        // Only the widths differ between the two halves; the block-type lists are sized to them so the record is consistent.
        DownBlockTypes = Enumerable.Repeat("DownEncoderBlock2D", widths.Length).ToArray(),
        UpBlockTypes = Enumerable.Repeat("UpDecoderBlock2D", widths.Length).ToArray(),
        BlockOutChannels = widths,
        LayersPerBlock = LayersPerBlock,
        ActFn = ActFn,
        LatentChannels = LatentChannels,
        NormNumGroups = NormNumGroups,
        SampleSize = SampleSize,
        ForceUpcast = ForceUpcast,
        UseQuantConv = UseQuantConv,
        UsePostQuantConv = UsePostQuantConv,
        MidBlockAddAttention = MidBlockAddAttention,
    };
}
