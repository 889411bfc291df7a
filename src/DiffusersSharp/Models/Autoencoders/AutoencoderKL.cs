using DiffusersSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>AutoencoderKL</c>: the KL VAE of Stable Diffusion 1.x, SDXL and SD3 / 3.5. <see cref="Encode"/> maps
/// images in [-1, 1] to a <see cref="DiagonalGaussianDistribution"/> over latents, <see cref="Decode"/> maps latents
/// back to images. Latents here are unscaled: pipelines apply <c>scaling_factor</c> / <c>shift_factor</c>.
/// Optional tiling (large images in overlapping tiles, blended as diffusers does) and slicing (one batch item at a time)
/// reduce peak memory.
/// </summary>
public sealed class AutoencoderKL : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Encoder encoder;
    private readonly Decoder decoder;
    private readonly Conv2d? quant_conv;
    private readonly Conv2d? post_quant_conv;
#pragma warning restore IDE1006

    private int _tileSampleMinSize;
    private int _tileLatentMinSize;
    private double _tileOverlapFactor = 0.25;

    /// <summary>The model's configuration.</summary>
    public AutoencoderKLConfig Config { get; }

    /// <summary>Pixels per latent along each axis: 2^(len(block_out_channels) - 1) (8 for SD / SDXL / SD3).</summary>
    public int VaeScaleFactor => Config.VaeScaleFactor;

    /// <summary>Whether images / latents larger than a tile are processed in overlapping tiles.</summary>
    public bool UseTiling { get; set; }

    /// <summary>Whether batches are encoded / decoded one item at a time.</summary>
    public bool UseSlicing { get; set; }

    /// <summary>Tile size in pixels (diffusers' <c>tile_sample_min_size</c>; default <c>sample_size</c>).</summary>
    public int TileSampleMinSize
    {
        get => _tileSampleMinSize;
        set => _tileSampleMinSize = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "tile size must be positive.");
    }

    /// <summary>Tile size in latents (diffusers' <c>tile_latent_min_size</c>; default <c>sample_size / VaeScaleFactor</c>).</summary>
    public int TileLatentMinSize
    {
        get => _tileLatentMinSize;
        set => _tileLatentMinSize = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "tile size must be positive.");
    }

    /// <summary>Fraction of a tile that overlaps its neighbour (default 0.25).</summary>
    public double TileOverlapFactor
    {
        get => _tileOverlapFactor;
        set => _tileOverlapFactor = value is >= 0 and < 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "overlap factor must be in [0, 1).");
    }

    /// <summary>Builds the model (random init, or empty shells on the <c>meta</c> device for loading).</summary>
    /// <exception cref="ArgumentException">The config is invalid (see <see cref="AutoencoderKLConfig.Validate"/>).</exception>
    public AutoencoderKL(AutoencoderKLConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(AutoencoderKL))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        encoder = new Encoder(config, device, dtype);
        decoder = new Decoder(config, device, dtype);
        if (config.UseQuantConv)
            quant_conv = nn.Conv2d(2 * config.LatentChannels, 2 * config.LatentChannels, 1, device: device, dtype: dtype);
        if (config.UsePostQuantConv)
            post_quant_conv = nn.Conv2d(config.LatentChannels, config.LatentChannels, 1, device: device, dtype: dtype);
        _tileSampleMinSize = config.SampleSize;
        // diffusers: int(sample_size / 2 ** (levels - 1)), a float division then truncation.
        _tileLatentMinSize = Math.Max(1, (int)(config.SampleSize / Math.Pow(2, config.BlockOutChannels.Length - 1)));
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
    public static AutoencoderKL FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<AutoencoderKLConfig, AutoencoderKL>(folder, (c, meta) => new AutoencoderKL(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Loads the VAE of an original single-file checkpoint (LDM layout, keys under <c>first_stage_model.</c> or
    /// <c>vae.</c>), as diffusers' <c>from_single_file</c>, with <paramref name="config"/> (the model's
    /// <c>vae/config.json</c>: the scaling and shift factors are not in the file).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file holds no VAE, or keys of another layout.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static AutoencoderKL FromSingleFile(string path, AutoencoderKLConfig config, ScalarType? dtype = null, Device? device = null) =>
        PretrainedLoader.LoadConverted(path, (_, meta) => new AutoencoderKL(config, meta), file =>
            Loaders.SingleFileConversion.ConvertLdmVae(file, Loaders.SingleFileConversion.VaePrefix(file)
                ?? throw new InvalidDataException($"{Path.GetFileName(path)} holds no VAE (first_stage_model.* or vae.* keys).")), dtype, device);

    /// <summary>Turns tiling on (or off with <c>false</c>).</summary>
    public void EnableTiling(bool useTiling = true) => UseTiling = useTiling;

    /// <summary>Turns tiling off.</summary>
    public void DisableTiling() => UseTiling = false;

    /// <summary>Turns slicing on.</summary>
    public void EnableSlicing() => UseSlicing = true;

    /// <summary>Turns slicing off.</summary>
    public void DisableSlicing() => UseSlicing = false;

    /// <summary>Encodes images <paramref name="x"/> [B, in_channels, H, W] in [-1, 1] to the latent posterior.</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device, or H / W not a multiple of <see cref="VaeScaleFactor"/>.</exception>
    public DiagonalGaussianDistribution Encode(Tensor x)
    {
        VaeInputs.Check(this, x, Config.InChannels, "image", nameof(x));
        VaeInputs.CheckImageSize(x, VaeScaleFactor, nameof(x));
        using var scope = NewDisposeScope();
        return new DiagonalGaussianDistribution(VaeInputs.Sliced(x, UseSlicing, EncodeOne)).MoveToOuterDisposeScope();
    }

    /// <summary>Decodes latents <paramref name="z"/> [B, latent_channels, h, w] (unscaled) to images [B, out_channels, h*f, w*f].</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device.</exception>
    public Tensor Decode(Tensor z)
    {
        VaeInputs.Check(this, z, Config.LatentChannels, "latent", nameof(z));
        using var scope = NewDisposeScope();
        return VaeInputs.Sliced(z, UseSlicing, DecodeOne).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>forward</c>: encode, take the posterior mode, decode.</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        using var posterior = Encode(input);
        using var mode = posterior.Mode();
        return Decode(mode).MoveToOuterDisposeScope();
    }

    private Tensor EncodeOne(Tensor x)
    {
        if (UseTiling && (x.shape[3] > TileSampleMinSize || x.shape[2] > TileSampleMinSize))
            return TiledEncode(x);
        var h = encoder.forward(x);
        return quant_conv is null ? h : quant_conv.forward(h);
    }

    private Tensor DecodeOne(Tensor z)
    {
        if (UseTiling && (z.shape[3] > TileLatentMinSize || z.shape[2] > TileLatentMinSize))
            return TiledDecode(z);
        var input = post_quant_conv is null ? z : post_quant_conv.forward(z);
        return decoder.forward(input);
    }

    // Tiling follows diffusers' _tiled_encode / tiled_decode line by line (VaeTiling holds the loop and the blends):
    // square tiles, the step and blend from the overlap factor.
    private Tensor TiledEncode(Tensor x)
    {
        int step = (int)(TileSampleMinSize * (1 - TileOverlapFactor));
        int blendExtent = (int)(TileLatentMinSize * TileOverlapFactor);
        int rowLimit = TileLatentMinSize - blendExtent;
        RequirePositiveStep(step, TileSampleMinSize);
        return VaeTiling.Tiled(x, step, step, TileSampleMinSize, TileSampleMinSize, blendExtent, blendExtent, rowLimit, rowLimit, tile =>
        {
            var h = encoder.forward(tile);
            return quant_conv is null ? h : quant_conv.forward(h);
        });
    }

    private Tensor TiledDecode(Tensor z)
    {
        int step = (int)(TileLatentMinSize * (1 - TileOverlapFactor));
        int blendExtent = (int)(TileSampleMinSize * TileOverlapFactor);
        int rowLimit = TileSampleMinSize - blendExtent;
        RequirePositiveStep(step, TileLatentMinSize);
        return VaeTiling.Tiled(z, step, step, TileLatentMinSize, TileLatentMinSize, blendExtent, blendExtent, rowLimit, rowLimit, tile =>
            decoder.forward(post_quant_conv is null ? tile : post_quant_conv.forward(tile)));
    }

    private void RequirePositiveStep(int step, int tile)
    {
        if (step <= 0)
            throw new InvalidOperationException($"tile size {tile} with overlap factor {TileOverlapFactor} leaves no step between tiles; use larger tiles.");
    }
}
