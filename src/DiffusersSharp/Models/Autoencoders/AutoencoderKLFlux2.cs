using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>AutoencoderKLFlux2</c> (v0.39.0): FLUX.2's VAE. The KL autoencoder of <see cref="AutoencoderKL"/>
/// (the same <see cref="Encoder"/> / <see cref="Decoder"/>, <c>quant_conv</c> / <c>post_quant_conv</c>) whose decoder may
/// have its own widths, plus a <c>bn</c> BatchNorm over 2 x 2 patchified latents. <c>bn</c> never runs: its running
/// statistics (<see cref="LatentStatistics"/>) are what the FLUX.2 pipelines normalise patchified latents with.
/// Latents from <see cref="Encode"/> / to <see cref="Decode"/> are unpatchified and unnormalised. Slicing is
/// supported; tiling is not implemented.
/// </summary>
public sealed class AutoencoderKLFlux2 : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Encoder encoder;
    private readonly Decoder decoder;
    private readonly Conv2d? quant_conv;
    private readonly Conv2d? post_quant_conv;
    private readonly BatchNorm2d bn;
#pragma warning restore IDE1006

    /// <summary>The model's configuration.</summary>
    public AutoencoderKLFlux2Config Config { get; }

    /// <summary>Pixels per latent along each axis: 2^(len(block_out_channels) - 1) (8 for FLUX.2), before the pipelines' 2 x 2 patchify.</summary>
    public int VaeScaleFactor => Config.VaeScaleFactor;

    /// <summary>Whether batches are encoded / decoded one item at a time.</summary>
    public bool UseSlicing { get; set; }

    /// <summary>Builds the model (random init, or empty shells on the <c>meta</c> device for loading).</summary>
    /// <exception cref="ArgumentException">The config is invalid (see <see cref="AutoencoderKLFlux2Config.Validate"/>).</exception>
    public AutoencoderKLFlux2(AutoencoderKLFlux2Config config, Device? device = null, ScalarType? dtype = null) : base(nameof(AutoencoderKLFlux2))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        encoder = new Encoder(config.EncoderConfig(), device, dtype);
        decoder = new Decoder(config.DecoderConfig(), device, dtype);
        if (config.UseQuantConv)
            quant_conv = nn.Conv2d(2 * config.LatentChannels, 2 * config.LatentChannels, 1, device: device, dtype: dtype);
        if (config.UsePostQuantConv)
            post_quant_conv = nn.Conv2d(config.LatentChannels, config.LatentChannels, 1, device: device, dtype: dtype);
        // No affine weights; running_mean / running_var / num_batches_tracked are persistent buffers in the checkpoint.
        bn = nn.BatchNorm2d(config.BatchNormChannels, eps: config.BatchNormEps, momentum: config.BatchNormMomentum,
            affine: false, track_running_stats: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Loads a diffusers <c>vae</c> folder (config.json + diffusion_pytorch_model.safetensors), strictly (the <c>bn</c> buffers included).</summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="dtype">Floating-point dtype of the weights and <c>bn</c> statistics (null keeps the stored one; <c>num_batches_tracked</c> stays int64).</param>
    /// <param name="device">Target device (default CPU).</param>
    /// <param name="variant">Weight variant such as "fp16" (falls back to the default weights when absent).</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static AutoencoderKLFlux2 FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<AutoencoderKLFlux2Config, AutoencoderKLFlux2>(folder, (c, meta) => new AutoencoderKLFlux2(c, meta, dtype), dtype, device, variant);

    /// <summary>Turns slicing on.</summary>
    public void EnableSlicing() => UseSlicing = true;

    /// <summary>Turns slicing off.</summary>
    public void DisableSlicing() => UseSlicing = false;

    /// <summary>
    /// The <c>bn</c> statistics as the FLUX.2 pipelines compute them: <c>Mean = running_mean.view(1, -1, 1, 1)</c> and
    /// <c>Std = sqrt(running_var.view(1, -1, 1, 1) + batch_norm_eps)</c>, both [1, prod(patch_size) x latent_channels, 1, 1],
    /// computed in the buffers' dtype (the model's) and then moved to <paramref name="device"/> / <paramref name="dtype"/>.
    /// Pipelines normalise patchified latents with <c>(x - Mean) / Std</c> and undo it with <c>x * Std + Mean</c>.
    /// </summary>
    public (Tensor Mean, Tensor Std) LatentStatistics(ScalarType dtype, Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        using var scope = NewDisposeScope();
        var runningMean = bn.running_mean ?? throw new InvalidOperationException("bn has no running_mean.");
        var runningVar = bn.running_var ?? throw new InvalidOperationException("bn has no running_var.");
        var mean = runningMean.view(1, -1, 1, 1).to(dtype, device, copy: true);
        var std = runningVar.view(1, -1, 1, 1).add(Config.BatchNormEps).sqrt_().to(dtype, device);
        return (mean.MoveToOuterDisposeScope(), std.MoveToOuterDisposeScope());
    }

    /// <summary>Encodes images <paramref name="x"/> [B, in_channels, H, W] in [-1, 1] to the latent posterior over [B, latent_channels, H / f, W / f].</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device, or H / W not a multiple of <see cref="VaeScaleFactor"/>.</exception>
    public DiagonalGaussianDistribution Encode(Tensor x)
    {
        VaeInputs.Check(this, x, Config.InChannels, "image", nameof(x));
        VaeInputs.CheckImageSize(x, VaeScaleFactor, nameof(x));
        using var scope = NewDisposeScope();
        return new DiagonalGaussianDistribution(VaeInputs.Sliced(x, UseSlicing, EncodeOne)).MoveToOuterDisposeScope();
    }

    /// <summary>Decodes latents <paramref name="z"/> [B, latent_channels, h, w] (unpatchified, unnormalised) to images [B, out_channels, h*f', w*f'] (f' from the decoder's levels).</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device.</exception>
    public Tensor Decode(Tensor z)
    {
        VaeInputs.Check(this, z, Config.LatentChannels, "latent", nameof(z));
        using var scope = NewDisposeScope();
        return VaeInputs.Sliced(z, UseSlicing, DecodeOne).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>forward</c> (sample_posterior=False): encode, take the posterior mode, decode.</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        using var posterior = Encode(input);
        using var mode = posterior.Mode();
        return Decode(mode).MoveToOuterDisposeScope();
    }

    private Tensor EncodeOne(Tensor x)
    {
        var h = encoder.forward(x);
        return quant_conv is null ? h : h.Consume(quant_conv.forward);
    }

    private Tensor DecodeOne(Tensor z)
    {
        var input = post_quant_conv is null ? z : post_quant_conv.forward(z);
        return decoder.forward(input);
    }
}
