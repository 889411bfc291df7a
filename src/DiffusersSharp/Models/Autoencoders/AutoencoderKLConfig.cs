using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// The <c>config.json</c> of a diffusers <c>AutoencoderKL</c>. Defaults are the Python constructor defaults (not the
/// SD3 hub values: SD3 uses 16 latent channels, four levels, no quant convs, scaling 1.5305 and shift 0.0609).
/// </summary>
public sealed record AutoencoderKLConfig
{
    /// <summary>Image channels the encoder takes.</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Image channels the decoder produces.</summary>
    public int OutChannels { get; init; } = 3;

    /// <summary>Encoder block types, one per level; only <c>DownEncoderBlock2D</c> exists for this model.</summary>
    public string[] DownBlockTypes { get; init; } = ["DownEncoderBlock2D"];

    /// <summary>Decoder block types, one per level; only <c>UpDecoderBlock2D</c> exists for this model.</summary>
    public string[] UpBlockTypes { get; init; } = ["UpDecoderBlock2D"];

    /// <summary>Channels of each level, from the image side.</summary>
    public int[] BlockOutChannels { get; init; } = [64];

    /// <summary>Resnet blocks per encoder level (the decoder uses one more).</summary>
    public int LayersPerBlock { get; init; } = 1;

    /// <summary>Activation of the resnets and of the output head; "silu" (alias "swish") is supported.</summary>
    public string ActFn { get; init; } = "silu";

    /// <summary>Channels of the latent space.</summary>
    public int LatentChannels { get; init; } = 4;

    /// <summary>Groups of every GroupNorm.</summary>
    public int NormNumGroups { get; init; } = 32;

    /// <summary>Image size the model was trained at; tiling uses it as the tile size in pixels.</summary>
    public int SampleSize { get; init; } = 32;

    /// <summary>Latents are multiplied by this before the diffusion model sees them.</summary>
    public double ScalingFactor { get; init; } = 0.18215;

    /// <summary>Subtracted from latents before scaling (SD3: 0.0609), or null.</summary>
    public double? ShiftFactor { get; init; }

    /// <summary>Per-channel latent means (SDXL-style normalisation), or null.</summary>
    public double[]? LatentsMean { get; init; }

    /// <summary>Per-channel latent standard deviations, or null.</summary>
    public double[]? LatentsStd { get; init; }

    /// <summary>Whether pipelines should run this VAE in float32 when the rest is in half precision.</summary>
    public bool ForceUpcast { get; init; } = true;

    /// <summary>Whether a 1x1 <c>quant_conv</c> follows the encoder (SD 1.5 / SDXL: yes; SD3: no).</summary>
    public bool UseQuantConv { get; init; } = true;

    /// <summary>Whether a 1x1 <c>post_quant_conv</c> precedes the decoder (SD 1.5 / SDXL: yes; SD3: no).</summary>
    public bool UsePostQuantConv { get; init; } = true;

    /// <summary>Whether the mid blocks hold a self-attention layer.</summary>
    public bool MidBlockAddAttention { get; init; } = true;

    /// <summary>Pixels per latent along each axis: 2^(levels - 1).</summary>
    [JsonIgnore]
    public int VaeScaleFactor => 1 << (BlockOutChannels.Length - 1);

    /// <summary>Checks the config describes a model this port can build.</summary>
    /// <exception cref="ArgumentException">A field is out of range or names an unsupported block or activation.</exception>
    public void Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok) throw new ArgumentException("AutoencoderKL config: " + message);
        }
        Require(InChannels > 0 && OutChannels > 0 && LatentChannels > 0, "in_channels, out_channels and latent_channels must be positive.");
        Require(BlockOutChannels is { Length: > 0 }, "block_out_channels must list at least one level.");
        Require(BlockOutChannels.All(c => c > 0), "block_out_channels must be positive.");
        Require(DownBlockTypes.Length == BlockOutChannels.Length,
            $"down_block_types has {DownBlockTypes.Length} entries but block_out_channels has {BlockOutChannels.Length}.");
        Require(UpBlockTypes.Length == BlockOutChannels.Length,
            $"up_block_types has {UpBlockTypes.Length} entries but block_out_channels has {BlockOutChannels.Length}.");
        Require(DownBlockTypes.All(t => t == "DownEncoderBlock2D"), $"unsupported down block type in [{string.Join(", ", DownBlockTypes)}]; only DownEncoderBlock2D is implemented.");
        Require(UpBlockTypes.All(t => t == "UpDecoderBlock2D"), $"unsupported up block type in [{string.Join(", ", UpBlockTypes)}]; only UpDecoderBlock2D is implemented.");
        Require(LayersPerBlock > 0, "layers_per_block must be positive.");
        Require(ActFn is "silu" or "swish", $"act_fn '{ActFn}' is not supported (only silu).");
        Require(NormNumGroups > 0 && BlockOutChannels.All(c => c % NormNumGroups == 0),
            $"every block_out_channels entry must be divisible by norm_num_groups ({NormNumGroups}).");
        Require(SampleSize > 0, "sample_size must be positive.");
        Require(ScalingFactor != 0, "scaling_factor must not be zero.");
    }
}
