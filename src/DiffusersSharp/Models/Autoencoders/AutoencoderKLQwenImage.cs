using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>AutoencoderKLQwenImage</c>: Qwen-Image's causal 3-D VAE (Wan 2.1's design; an image is a one-frame
/// video). Encoding runs the first frame alone, then chunks of four, through <c>encoder</c> with a frame cache (each
/// causal convolution sees the previous chunk's last frames), then <c>quant_conv</c>; decoding runs
/// <c>post_quant_conv</c>, then <c>decoder</c> frame by frame with its own cache, and clamps to [−1, 1]. 8× spatial
/// compression, 4× in time, 16 latent channels normalised by the pipelines with <c>latents_mean</c> / <c>latents_std</c>.
/// Not built: diffusers' tiling and slicing. State-dict keys equal the diffusers keys.
/// </summary>
public sealed class AutoencoderKLQwenImage : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly QwenImageEncoder3d encoder;
    private readonly QwenImageCausalConv3d quant_conv;
    private readonly QwenImageCausalConv3d post_quant_conv;
    private readonly QwenImageDecoder3d decoder;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public AutoencoderKLQwenImageConfig Config { get; }

    /// <summary>The pipelines' VAE scale factor, <c>2 ** len(temperal_downsample)</c> as diffusers computes it (8).</summary>
    public int VaeScaleFactor => 1 << Config.TemperalDownsample.Length;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only.</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public AutoencoderKLQwenImage(AutoencoderKLQwenImageConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(AutoencoderKLQwenImage))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        encoder = new QwenImageEncoder3d(config, device, dtype);
        quant_conv = new QwenImageCausalConv3d(2L * config.ZDim, 2L * config.ZDim, 1, 0, device, dtype);
        post_quant_conv = new QwenImageCausalConv3d(config.ZDim, config.ZDim, 1, 0, device, dtype);
        decoder = new QwenImageDecoder3d(config, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>vae</c> folder (config.json + safetensors), strictly: every key and shape must match.
    /// <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static AutoencoderKLQwenImage FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<AutoencoderKLQwenImageConfig, AutoencoderKLQwenImage>(folder, (c, meta) => new AutoencoderKLQwenImage(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Encodes <paramref name="x"/> [B, input_channels, T, H, W] in [−1, 1] (T = 1 for an image, or 1 + 4k frames) to the
    /// posterior over [B, z_dim, 1 + k, H/8, W/8] (diffusers' <c>encode(x).latent_dist</c>).
    /// </summary>
    /// <exception cref="ArgumentException">Not a 5-D tensor of the input channels, or a frame count other than 1 + 4k
    /// (diffusers would drop the frames past the last whole chunk).</exception>
    public DiagonalGaussianDistribution Encode(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 5 || x.shape[1] != Config.InputChannels || x.shape[3] < 1 || x.shape[4] < 1)
            throw new ArgumentException($"The Qwen-Image VAE encodes [B, {Config.InputChannels}, T, H, W] frames, got [{string.Join(", ", x.shape)}].", nameof(x));
        if ((x.shape[2] - 1) % 4 != 0)
            throw new ArgumentException($"The Qwen-Image VAE encodes 1 + 4k frames (the first alone, then chunks of four), got {x.shape[2]}.", nameof(x));
        Tensor moments;
        using (var scope = NewDisposeScope())
        using (var cache = new QwenImageFeatureCache())
        {
            var input = x.to(this.WeightDtype());
            var chunks = new List<Tensor>();
            for (long start = 0; start < input.shape[2]; start += start == 0 ? 1 : 4)
            {
                cache.StartChunk();
                chunks.Add(encoder.forward(input.narrow(2, start, start == 0 ? 1 : 4), cache));
            }
            moments = quant_conv.forward(chunks.Count == 1 ? chunks[0] : cat(chunks, 2)).MoveToOuterDisposeScope();
        }
        // Built outside the scope: the distribution owns its tensors.
        return new DiagonalGaussianDistribution(moments);
    }

    /// <summary>
    /// Decodes latents <paramref name="z"/> [B, z_dim, T, h, w] (already un-normalised with latents_mean / latents_std) to
    /// frames [B, input_channels, 1 + 4(T − 1), 8h, 8w] clamped to [−1, 1] (diffusers' <c>decode(z).sample</c>).
    /// </summary>
    /// <exception cref="ArgumentException">Not a 5-D tensor of z_dim channels.</exception>
    public Tensor Decode(Tensor z)
    {
        ArgumentNullException.ThrowIfNull(z);
        if (z.dim() != 5 || z.shape[1] != Config.ZDim || z.shape[2] < 1 || z.shape[3] < 1 || z.shape[4] < 1)
            throw new ArgumentException($"The Qwen-Image VAE decodes [B, {Config.ZDim}, T, h, w] latents, got [{string.Join(", ", z.shape)}].", nameof(z));
        using var scope = NewDisposeScope();
        using var cache = new QwenImageFeatureCache();
        var x = post_quant_conv.forward(z.to(this.WeightDtype()));
        var frames = new List<Tensor>();
        for (long i = 0; i < x.shape[2]; i++)
        {
            cache.StartChunk();
            frames.Add(decoder.forward(x.narrow(2, i, 1), cache));
        }
        x.Dispose();
        var output = (frames.Count == 1 ? frames[0] : cat(frames, 2)).clamp_(-1.0, 1.0);
        return output.MoveToOuterDisposeScope();
    }
}
