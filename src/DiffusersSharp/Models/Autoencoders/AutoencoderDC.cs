using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>AutoencoderDC</c> (v0.39.0): the deep-compression autoencoder (DC-AE) of Sana. The encoder
/// (<see cref="DC.Encoder"/>) maps images in [-1, 1] to latents directly, with no distribution (diffusers' <c>encode</c>
/// returns <c>EncoderOutput(latent)</c>); the decoder (<see cref="DC.Decoder"/>) maps latents back to images. Latents are
/// unscaled: pipelines multiply by <see cref="ScalingFactor"/> after encoding and divide before decoding. Sana's
/// dc-ae-f32c32-sana-1.0 compresses 32× along each axis into 32 channels. diffusers' tiling and slicing are not
/// implemented (whole batches, whole images).
/// </summary>
public sealed class AutoencoderDC : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly DC.Encoder encoder;
    private readonly DC.Decoder decoder;
#pragma warning restore IDE1006

    /// <summary>The model's configuration.</summary>
    public AutoencoderDCConfig Config { get; }

    /// <summary>Pixels per latent along each axis: 2^(len(encoder_block_out_channels) - 1) (32 for Sana).</summary>
    public int VaeScaleFactor => Config.SpatialCompressionRatio;

    /// <summary>The config's <c>scaling_factor</c> (0.41407 for Sana's DC-AE).</summary>
    public double ScalingFactor => Config.ScalingFactor;

    /// <summary>Builds the model (random init, or empty shells on the <c>meta</c> device for loading).</summary>
    /// <exception cref="ArgumentException">The config is invalid (see <see cref="AutoencoderDCConfig.Validate"/>).</exception>
    public AutoencoderDC(AutoencoderDCConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(AutoencoderDC))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        encoder = new DC.Encoder(config, device, dtype);
        decoder = new DC.Decoder(config, device, dtype);
        RegisterComponents();
    }

    /// <summary>Loads a diffusers <c>vae</c> folder (config.json + diffusion_pytorch_model.safetensors), strictly (BatchNorm statistics included).</summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="dtype">Floating-point dtype of the weights (null keeps the stored one; <c>num_batches_tracked</c> stays int64).</param>
    /// <param name="device">Target device (default CPU).</param>
    /// <param name="variant">Weight variant such as "bf16" (falls back to the default weights when absent).</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static AutoencoderDC FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<AutoencoderDCConfig, AutoencoderDC>(folder, (c, meta) => new AutoencoderDC(c, meta, dtype), dtype, device, variant);

    /// <summary>Encodes images <paramref name="x"/> [B, in_channels, H, W] in [-1, 1] to latents [B, latent_channels, H / f, W / f] (unscaled).</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device, or H / W not a multiple of <see cref="VaeScaleFactor"/>.</exception>
    public Tensor Encode(Tensor x)
    {
        VaeInputs.Check(this, x, Config.InChannels, "image", nameof(x));
        VaeInputs.CheckImageSize(x, VaeScaleFactor, nameof(x));
        using var scope = NewDisposeScope();
        return encoder.forward(x).MoveToOuterDisposeScope();
    }

    /// <summary>Decodes latents <paramref name="z"/> [B, latent_channels, h, w] (unscaled) to images [B, in_channels, h·f, w·f] (not clamped).</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device.</exception>
    public Tensor Decode(Tensor z)
    {
        VaeInputs.Check(this, z, Config.LatentChannels, "latent", nameof(z));
        using var scope = NewDisposeScope();
        return decoder.forward(z).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>forward</c>: decode(encode(x)).</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        using var latents = Encode(input);
        return Decode(latents).MoveToOuterDisposeScope();
    }
}
