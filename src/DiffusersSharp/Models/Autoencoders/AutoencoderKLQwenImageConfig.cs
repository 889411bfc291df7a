namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// <c>vae/config.json</c> of <c>AutoencoderKLQwenImage</c> (the Wan-2.1-style causal 3-D VAE of Qwen-Image). Property names
/// map to the Python snake_case fields (<c>temperal_downsample</c> is diffusers' spelling); defaults are the diffusers
/// constructor defaults, Qwen/Qwen-Image's VAE.
/// </summary>
public sealed record AutoencoderKLQwenImageConfig
{
    /// <summary>Channels of the first level.</summary>
    public int BaseDim { get; init; } = 96;

    /// <summary>Latent channels.</summary>
    public int ZDim { get; init; } = 16;

    /// <summary>Channel multiplier per level.</summary>
    public int[] DimMult { get; init; } = [1, 2, 4, 4];

    /// <summary>Residual blocks per encoder level (the decoder has one more).</summary>
    public int NumResBlocks { get; init; } = 2;

    /// <summary>Scales with attention in the encoder's levels (diffusers' encoder cannot run any: must be empty).</summary>
    public double[] AttnScales { get; init; } = [];

    /// <summary>Per downsampling level, whether it also halves time (diffusers' spelling <c>temperal_downsample</c>).</summary>
    [System.Text.Json.Serialization.JsonPropertyName("temperal_downsample")]
    public bool[] TemperalDownsample { get; init; } = [false, true, true];

    /// <summary>Dropout (inference: unused).</summary>
    public double Dropout { get; init; }

    /// <summary>Image channels in and out (3; Qwen-Image-Layered's is 4).</summary>
    public int InputChannels { get; init; } = 3;

    /// <summary>Per-channel latent mean the pipelines subtract (encoding) and add back (decoding).</summary>
    public double[] LatentsMean { get; init; } =
        [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921];

    /// <summary>Per-channel latent standard deviation the pipelines divide by (encoding) and multiply back (decoding).</summary>
    public double[] LatentsStd { get; init; } =
        [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160];

    /// <summary>Checks that the values make a model diffusers can run.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"AutoencoderKLQwenImage config: {name} must be positive, got {v}.");
        }
        Positive(BaseDim, "base_dim");
        Positive(ZDim, "z_dim");
        Positive(NumResBlocks, "num_res_blocks");
        Positive(InputChannels, "input_channels");
        if (DimMult is null || DimMult.Length < 1 || DimMult.Any(m => m < 1))
            throw new ArgumentException($"AutoencoderKLQwenImage config: dim_mult must be positive multipliers, got [{string.Join(", ", DimMult ?? [])}].");
        if (TemperalDownsample is null || TemperalDownsample.Length != DimMult.Length - 1)
            throw new ArgumentException($"AutoencoderKLQwenImage config: temperal_downsample needs one entry per downsampling level ({DimMult.Length - 1}), got {TemperalDownsample?.Length ?? 0}.");
        if (AttnScales is { Length: > 0 })
            throw new ArgumentException("AutoencoderKLQwenImage config: attn_scales must be empty (diffusers' encoder cannot run attention blocks in its levels).");
        // latents_mean / latents_std are the pipelines' (diffusers' model never reads them): checked where they are used.
    }
}
