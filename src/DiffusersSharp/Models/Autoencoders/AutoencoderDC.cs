using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>AutoencoderDC</c> (v0.39.0): the deep-compression autoencoder (DC-AE) of Sana. The encoder
/// (<see cref="DC.Encoder"/>) maps images in [-1, 1] to latents directly, with no distribution (diffusers' <c>encode</c>
/// returns <c>EncoderOutput(latent)</c>); the decoder (<see cref="DC.Decoder"/>) maps latents back to images. Latents are
/// unscaled: pipelines multiply by <see cref="ScalingFactor"/> after encoding and divide before decoding. Sana's
/// dc-ae-f32c32-sana-1.0 compresses 32× along each axis into 32 channels. Optional tiling (<see cref="EnableTiling"/>:
/// images or latents larger than a tile run in overlapping tiles, blended as diffusers does) bounds the memory of large
/// images (Sana 4K decodes 4096 px ones). diffusers' slicing is not implemented (whole batches).
/// </summary>
public sealed class AutoencoderDC : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly DC.Encoder encoder;
    private readonly DC.Decoder decoder;
#pragma warning restore IDE1006

    // diffusers' defaults (AutoencoderDC.__init__): 512 px tiles every 448 px.
    private const int DefaultTileSampleMinSize = 512;
    private const int DefaultTileSampleStride = 448;

    /// <summary>The model's configuration.</summary>
    public AutoencoderDCConfig Config { get; }

    /// <summary>Pixels per latent along each axis: 2^(len(encoder_block_out_channels) - 1) (32 for Sana).</summary>
    public int VaeScaleFactor => Config.SpatialCompressionRatio;

    /// <summary>The config's <c>scaling_factor</c> (0.41407 for Sana's DC-AE).</summary>
    public double ScalingFactor => Config.ScalingFactor;

    /// <summary>Whether images / latents larger than a tile are encoded / decoded in overlapping tiles (see <see cref="EnableTiling"/>).</summary>
    public bool UseTiling { get; private set; }

    /// <summary>Tile height in pixels (diffusers' <c>tile_sample_min_height</c>; default 512). Latent tiles are this / <see cref="VaeScaleFactor"/>.</summary>
    public int TileSampleMinHeight { get; private set; } = DefaultTileSampleMinSize;

    /// <summary>Tile width in pixels (diffusers' <c>tile_sample_min_width</c>; default 512).</summary>
    public int TileSampleMinWidth { get; private set; } = DefaultTileSampleMinSize;

    /// <summary>Pixels between the tops of two vertically consecutive tiles (diffusers' <c>tile_sample_stride_height</c>; default 448).</summary>
    public int TileSampleStrideHeight { get; private set; } = DefaultTileSampleStride;

    /// <summary>Pixels between the left edges of two horizontally consecutive tiles (diffusers' <c>tile_sample_stride_width</c>; default 448).</summary>
    public int TileSampleStrideWidth { get; private set; } = DefaultTileSampleStride;

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

    /// <summary>
    /// diffusers' <c>enable_tiling</c>: from now on, <see cref="Encode"/> splits an image taller than
    /// <see cref="TileSampleMinHeight"/> or wider than <see cref="TileSampleMinWidth"/> into tiles of that size every
    /// stride pixels, and <see cref="Decode"/> latents larger than a tile / <see cref="VaeScaleFactor"/> likewise; where
    /// tiles overlap (tile size − stride), each is faded linearly into the one above and to its left. A null argument
    /// keeps the current value (initially diffusers' 512, 512, 448, 448).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not a positive multiple of <see cref="VaeScaleFactor"/>, or a
    /// stride is larger than its tile (rows or columns would be skipped). Nothing is changed then.</exception>
    public void EnableTiling(int? tileSampleMinHeight = null, int? tileSampleMinWidth = null, int? tileSampleStrideHeight = null, int? tileSampleStrideWidth = null)
    {
        int minHeight = tileSampleMinHeight ?? TileSampleMinHeight, minWidth = tileSampleMinWidth ?? TileSampleMinWidth;
        int strideHeight = tileSampleStrideHeight ?? TileSampleStrideHeight, strideWidth = tileSampleStrideWidth ?? TileSampleStrideWidth;
        // diffusers divides each size by the compression ratio (floor) for the latent tiles and strides but keeps the
        // pixel sizes for the decoded tiles: any other size would misplace tiles (a pixel stride of 450 at f32 keeps 450
        // px per tile while the latents advance 448), and one below the ratio gives empty tiles or a zero step.
        CheckTileSize(minHeight, nameof(tileSampleMinHeight));
        CheckTileSize(minWidth, nameof(tileSampleMinWidth));
        CheckTileSize(strideHeight, nameof(tileSampleStrideHeight));
        CheckTileSize(strideWidth, nameof(tileSampleStrideWidth));
        if (strideHeight > minHeight)
            throw new ArgumentOutOfRangeException(nameof(tileSampleStrideHeight), strideHeight,
                $"the tile stride height must not exceed the tile height {minHeight}: the rows between tiles would be skipped.");
        if (strideWidth > minWidth)
            throw new ArgumentOutOfRangeException(nameof(tileSampleStrideWidth), strideWidth,
                $"the tile stride width must not exceed the tile width {minWidth}: the columns between tiles would be skipped.");
        TileSampleMinHeight = minHeight;
        TileSampleMinWidth = minWidth;
        TileSampleStrideHeight = strideHeight;
        TileSampleStrideWidth = strideWidth;
        UseTiling = true;
    }

    /// <summary>diffusers' <c>disable_tiling</c>: whole images / latents again (the tile sizes are kept for the next <see cref="EnableTiling"/>).</summary>
    public void DisableTiling() => UseTiling = false;

    private void CheckTileSize(int value, string paramName)
    {
        if (value <= 0 || value % VaeScaleFactor != 0)
            throw new ArgumentOutOfRangeException(paramName, value,
                $"tile sizes and strides must be positive multiples of the VAE scale factor {VaeScaleFactor} (pixels per latent).");
    }

    /// <summary>Encodes images <paramref name="x"/> [B, in_channels, H, W] in [-1, 1] to latents [B, latent_channels, H / f, W / f] (unscaled).</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device, or H / W not a multiple of <see cref="VaeScaleFactor"/>.</exception>
    public Tensor Encode(Tensor x)
    {
        VaeInputs.Check(this, x, Config.InChannels, "image", nameof(x));
        VaeInputs.CheckImageSize(x, VaeScaleFactor, nameof(x));
        using var scope = NewDisposeScope();
        // diffusers' _encode: tiles only when the image is larger than one tile.
        var latent = UseTiling && (x.shape[3] > TileSampleMinWidth || x.shape[2] > TileSampleMinHeight) ? TiledEncode(x) : encoder.forward(x);
        return latent.MoveToOuterDisposeScope();
    }

    /// <summary>Decodes latents <paramref name="z"/> [B, latent_channels, h, w] (unscaled) to images [B, in_channels, h·f, w·f] (not clamped).</summary>
    /// <exception cref="ArgumentException">Wrong rank, channel count, dtype or device.</exception>
    public Tensor Decode(Tensor z)
    {
        VaeInputs.Check(this, z, Config.LatentChannels, "latent", nameof(z));
        using var scope = NewDisposeScope();
        // diffusers' _decode: tiles only when the latents are larger than one tile's latents.
        var sample = UseTiling && (z.shape[3] > TileSampleMinWidth / VaeScaleFactor || z.shape[2] > TileSampleMinHeight / VaeScaleFactor)
            ? TiledDecode(z) : decoder.forward(z);
        return sample.MoveToOuterDisposeScope();
    }

    // diffusers' tiled_encode: pixel tiles and strides, latent blends (tile − stride in latents) and latent parts kept.
    // EnableTiling admits only multiples of the ratio, so every tile is a multiple of it and diffusers' padding of a
    // tile to the next multiple never applies; the result is cut to H / f x W / f as diffusers cuts it.
    private Tensor TiledEncode(Tensor x)
    {
        int f = VaeScaleFactor;
        int latentMinHeight = TileSampleMinHeight / f, latentMinWidth = TileSampleMinWidth / f;
        int latentStrideHeight = TileSampleStrideHeight / f, latentStrideWidth = TileSampleStrideWidth / f;
        using var tiled = VaeTiling.Tiled(x, TileSampleStrideHeight, TileSampleStrideWidth, TileSampleMinHeight, TileSampleMinWidth,
            latentMinHeight - latentStrideHeight, latentMinWidth - latentStrideWidth, latentStrideHeight, latentStrideWidth, encoder.forward);
        return tiled.narrow(2, 0, x.shape[2] / f).narrow(3, 0, x.shape[3] / f).clone();
    }

    // diffusers' tiled_decode: latent tiles and strides, pixel blends (tile − stride in pixels) and pixel parts kept.
    private Tensor TiledDecode(Tensor z)
    {
        int f = VaeScaleFactor;
        return VaeTiling.Tiled(z, TileSampleStrideHeight / f, TileSampleStrideWidth / f, TileSampleMinHeight / f, TileSampleMinWidth / f,
            TileSampleMinHeight - TileSampleStrideHeight, TileSampleMinWidth - TileSampleStrideWidth,
            TileSampleStrideHeight, TileSampleStrideWidth, decoder.forward);
    }

    /// <summary>diffusers' <c>forward</c>: decode(encode(x)).</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        using var latents = Encode(input);
        return Decode(latents).MoveToOuterDisposeScope();
    }
}
