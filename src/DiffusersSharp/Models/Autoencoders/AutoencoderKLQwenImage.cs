using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>AutoencoderKLQwenImage</c> (v0.39.0): the Wan-2.1-style causal 3-D VAE of Qwen-Image. Images are
/// one-frame videos [B, C, 1, H, W]. <see cref="Encode"/> runs the encoder on the first frame, then on chunks of four
/// frames, carrying each causal convolution's last frames over in a frame cache (as diffusers' <c>_encode</c>);
/// <see cref="Decode"/> decodes one latent frame at a time the same way and clamps to [-1, 1]. Latents are
/// unnormalised: pipelines apply <c>latents_mean</c> / <c>latents_std</c>. Tiling and slicing are not implemented.
/// </summary>
public sealed class AutoencoderKLQwenImage : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly QwenImageEncoder3d encoder;
    private readonly QwenImageCausalConv3d quant_conv;
    private readonly QwenImageCausalConv3d post_quant_conv;
    private readonly QwenImageDecoder3d decoder;
#pragma warning restore IDE1006

    /// <summary>The model's configuration.</summary>
    public AutoencoderKLQwenImageConfig Config { get; }

    /// <summary>Pixels per latent along height and width: <c>2^len(temperal_downsample)</c> (8 for Qwen-Image), as diffusers' pipelines compute it.</summary>
    public int VaeScaleFactor => 1 << Config.TemperalDownsample.Length;

    /// <summary>Builds the model (random init, or empty shells on the <c>meta</c> device for loading).</summary>
    /// <exception cref="ArgumentException">The config is invalid (see <see cref="AutoencoderKLQwenImageConfig.Validate"/>).</exception>
    public AutoencoderKLQwenImage(AutoencoderKLQwenImageConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(AutoencoderKLQwenImage))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        encoder = new QwenImageEncoder3d(config, device, dtype);
        quant_conv = new QwenImageCausalConv3d(2L * config.ZDim, 2L * config.ZDim, 1, device: device, dtype: dtype);
        post_quant_conv = new QwenImageCausalConv3d(config.ZDim, config.ZDim, 1, device: device, dtype: dtype);
        decoder = new QwenImageDecoder3d(config, device, dtype);
        RegisterComponents();
    }

    /// <summary>Loads a diffusers <c>vae</c> folder (config.json + diffusion_pytorch_model.safetensors), strictly.</summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="dtype">Weight dtype (null keeps the stored one).</param>
    /// <param name="device">Target device (default CPU).</param>
    /// <param name="variant">Weight variant such as "fp16" (falls back to the default weights when absent).</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static AutoencoderKLQwenImage FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<AutoencoderKLQwenImageConfig, AutoencoderKLQwenImage>(folder, (c, meta) => new AutoencoderKLQwenImage(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Encodes videos <paramref name="x"/> [B, input_channels, T, H, W] in [-1, 1] (images: T = 1) to the latent
    /// posterior over [B, z_dim, 1 + (T - 1) / 2^k, H / f, W / f], where f is <see cref="VaeScaleFactor"/> and k the
    /// number of temporal downsamples (Qwen-Image: k = 2, so 1 + (T - 1) / 4 latent frames).
    /// </summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device; T not 1 + 4k; H / W not a multiple of <see cref="VaeScaleFactor"/>.</exception>
    public DiagonalGaussianDistribution Encode(Tensor x)
    {
        CheckInput(x, Config.InputChannels, "video", nameof(x));
        long frames = x.shape[2];
        if ((frames - 1) % 4 != 0)
            throw new ArgumentException(
                $"the video must have 1 + 4k frames (the encoder takes the first frame, then chunks of 4); got {frames}.", nameof(x));
        if (x.shape[3] % VaeScaleFactor != 0 || x.shape[4] % VaeScaleFactor != 0)
            throw new ArgumentException(
                $"height and width must be multiples of the VAE scale factor {VaeScaleFactor}; got {x.shape[3]}x{x.shape[4]}. Resize or crop first.",
                nameof(x));
        using var scope = NewDisposeScope();
        using var cache = new QwenImageFeatureCache();
        var chunks = new List<Tensor>();
        for (long start = 0; start < frames; start += start == 0 ? 1 : 4)
        {
            long length = start == 0 ? 1 : 4;
            cache.StartChunk();
            using var chunkScope = NewDisposeScope();
            chunks.Add(encoder.forward(x.narrow(2, start, length), cache).MoveToOuterDisposeScope());
        }
        var output = chunks.Count == 1 ? chunks[0] : cat(chunks, 2);
        var moments = output.Consume(t => quant_conv.forward(t));
        return new DiagonalGaussianDistribution(moments).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Decodes latents <paramref name="z"/> [B, z_dim, T, h, w] (unnormalised) to videos [B, input_channels, T', h*f, w*f]
    /// clamped to [-1, 1], one latent frame at a time (the first gives one frame, each later one 2^k frames).
    /// </summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device.</exception>
    public Tensor Decode(Tensor z)
    {
        CheckInput(z, Config.ZDim, "latent", nameof(z));
        using var scope = NewDisposeScope();
        using var cache = new QwenImageFeatureCache();
        var x = post_quant_conv.forward(z);
        var frames = new List<Tensor>();
        for (long i = 0; i < x.shape[2]; i++)
        {
            cache.StartChunk();
            using var frameScope = NewDisposeScope();
            frames.Add(decoder.forward(x.narrow(2, i, 1), cache).MoveToOuterDisposeScope());
        }
        x.Dispose();
        var output = frames.Count == 1 ? frames[0] : cat(frames, 2);
        return output.clamp_(-1.0, 1.0).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>forward</c> (sample_posterior = False): encode, take the posterior mode, decode.</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        using var posterior = Encode(input);
        using var mode = posterior.Mode();
        return Decode(mode).MoveToOuterDisposeScope();
    }

    private void CheckInput(Tensor t, int channels, string what, string paramName)
    {
        ArgumentNullException.ThrowIfNull(t, paramName);
        if (t.dim() != 5)
            throw new ArgumentException(
                $"the {what} must be [B, {channels}, T, H, W] (an image is T = 1: unsqueeze(2)); got shape [{string.Join(", ", t.shape)}].", paramName);
        if (t.shape[1] != channels)
            throw new ArgumentException($"the {what} must have {channels} channels (dimension 1); got shape [{string.Join(", ", t.shape)}].", paramName);
        if (t.shape.Any(d => d == 0))
            throw new ArgumentException($"the {what} is empty: shape [{string.Join(", ", t.shape)}].", paramName);
        var weight = parameters().First();
        if (t.dtype != weight.dtype)
            throw new ArgumentException($"the {what} is {t.dtype} but the VAE weights are {weight.dtype}; convert it with .to({weight.dtype}).", paramName);
        if (t.device_type != weight.device_type || t.device_index != weight.device_index)
            throw new ArgumentException($"the {what} is on {t.device} but the VAE is on {weight.device}; move it first.", paramName);
    }
}
