using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// AutoencoderDC's tiling against diffusers v0.39.0's own tiled <c>encode</c> / <c>decode</c>
/// (local-diffusers/sana-dcae-tiling, written by tools/reference/sana_dcae_tiling.py) on the tiny 8x "sana" model of
/// local-diffusers/sana-dcae: an 88 x 136 image and 11 x 17 latents with square tiles (64 px every 48) and with tiles
/// whose height and width differ (48 x 80 px every 32 x 56), so that both directions have several tiles, overlaps and a
/// shorter last tile; and a 64 x 64 image / 8 x 8 latents, exactly one tile, which diffusers does not tile.
/// </summary>
public class AutoencoderDCTilingTests(ITestOutputHelper output)
{
    private static readonly string Model = Fixtures.Path("local-diffusers/sana-dcae/sana");

    private static Tensor E(string key)
    {
        using var file = SafetensorsFile.Open(Fixtures.Path("local-diffusers/sana-dcae-tiling/expected.safetensors"));
        return file.Read(key).clone();
    }

    // Float32, torch 1.13's CPU kernels against libtorch 2.10's, as AutoencoderDCTests (whose untiled bounds these are:
    // tiling only blends outputs of the same encoder / decoder). TensorAssert scales a bound by max(1, max |expected|):
    // encode 2e-6 x 6.95 / 6.63 = 1.4e-5 / 1.3e-5 against measured 5.3e-6 (square) / 3.8e-6 (rect), decode 5e-6 x 1.17 /
    // 1.13 = 5.9e-6 / 5.6e-6 against measured 1.6e-6 / 3.6e-6; the one-tile and untiled runs 3.8e-6. Tiled minus
    // untiled is 2.2 .. 2.3 on latents and 1.1 on images, five orders of magnitude above these bounds.
    private const double EncodeTolerance = 2e-6;
    private const double DecodeTolerance = 5e-6;

    public static TheoryData<string, int, int, int, int> Settings => new()
    {
        { "square", 64, 64, 48, 48 },
        { "rect", 48, 80, 32, 56 },
    };

    [Theory]
    [MemberData(nameof(Settings))]
    public void TiledEncodeMatchesDiffusers(string name, int minHeight, int minWidth, int strideHeight, int strideWidth)
    {
        using var vae = AutoencoderDC.FromPretrained(Model);
        vae.EnableTiling(minHeight, minWidth, strideHeight, strideWidth);
        Assert.True(vae.UseTiling);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var latent = vae.Encode(E("x"));
        double err = TensorAssert.Close(latent, E($"{name}.latent"), EncodeTolerance, "tiled latent");
        // Where tiles overlap the tiled latents are not the untiled ones: a run that skipped tiling would fail above.
        double fromUntiled = TensorAssert.MaxAbsDiff(latent, E("untiled.latent"));
        Assert.True(fromUntiled > 0.1, $"tiled latents are within {fromUntiled:G3} of the untiled ones");
        output.WriteLine($"{name} tiled encode -> {string.Join("x", latent.shape)}: max |diff| {err:G3} (from untiled {fromUntiled:G3})");
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void TiledDecodeMatchesDiffusers(string name, int minHeight, int minWidth, int strideHeight, int strideWidth)
    {
        using var vae = AutoencoderDC.FromPretrained(Model);
        vae.EnableTiling(minHeight, minWidth, strideHeight, strideWidth);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var sample = vae.Decode(E("z"));
        double err = TensorAssert.Close(sample, E($"{name}.sample"), DecodeTolerance, "tiled sample");
        double fromUntiled = TensorAssert.MaxAbsDiff(sample, E("untiled.sample"));
        Assert.True(fromUntiled > 0.1, $"tiled images are within {fromUntiled:G3} of the untiled ones");
        output.WriteLine($"{name} tiled decode -> {string.Join("x", sample.shape)}: max |diff| {err:G3} (from untiled {fromUntiled:G3})");
    }

    /// <summary>diffusers tiles only what is larger than one tile; DisableTiling goes back to whole images.</summary>
    [Fact]
    public void TilesOnlyWhatIsLargerThanATileAndDisableTilingStops()
    {
        using var vae = AutoencoderDC.FromPretrained(Model);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        vae.EnableTiling(64, 64, 48, 48);
        double err = TensorAssert.Close(vae.Encode(E("edge.x")), E("edge.tiled.latent"), EncodeTolerance, "one-tile latent");
        err = Math.Max(err, TensorAssert.Close(vae.Decode(E("edge.z")), E("edge.tiled.sample"), DecodeTolerance, "one-tile sample"));
        // diffusers' one-tile outputs are its untiled ones (the script asserts it): no tiling happened.
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(E("edge.tiled.latent"), E("edge.untiled.latent")));

        vae.DisableTiling();
        Assert.False(vae.UseTiling);
        err = Math.Max(err, TensorAssert.Close(vae.Encode(E("x")), E("untiled.latent"), EncodeTolerance, "untiled latent"));
        err = Math.Max(err, TensorAssert.Close(vae.Decode(E("z")), E("untiled.sample"), DecodeTolerance, "untiled sample"));
        output.WriteLine($"one tile and untiled: max |diff| {err:G3}");
    }

    [Fact]
    public void TileSettingsDefaultToDiffusersAndNullKeepsTheCurrentValue()
    {
        using var vae = AutoencoderDC.FromPretrained(Model);
        Assert.False(vae.UseTiling);
        Assert.Equal((512, 512, 448, 448), (vae.TileSampleMinHeight, vae.TileSampleMinWidth, vae.TileSampleStrideHeight, vae.TileSampleStrideWidth));
        vae.EnableTiling();
        Assert.True(vae.UseTiling);
        Assert.Equal((512, 512, 448, 448), (vae.TileSampleMinHeight, vae.TileSampleMinWidth, vae.TileSampleStrideHeight, vae.TileSampleStrideWidth));
        vae.EnableTiling(tileSampleMinWidth: 64, tileSampleStrideWidth: 56);
        vae.DisableTiling();
        vae.EnableTiling(tileSampleStrideHeight: 256);
        Assert.Equal((512, 64, 256, 56), (vae.TileSampleMinHeight, vae.TileSampleMinWidth, vae.TileSampleStrideHeight, vae.TileSampleStrideWidth));
    }

    [Theory]
    [InlineData(0, null, null, null, "tileSampleMinHeight")]
    [InlineData(null, -64, null, null, "tileSampleMinWidth")]
    [InlineData(60, null, 40, null, "tileSampleMinHeight")]       // not a multiple of 8
    [InlineData(null, null, 4, null, "tileSampleStrideHeight")]   // below one latent
    [InlineData(null, 64, null, 52, "tileSampleStrideWidth")]     // not a multiple of 8
    [InlineData(64, null, 72, null, "tileSampleStrideHeight")]    // stride over the tile: rows skipped
    [InlineData(null, 64, null, 448, "tileSampleStrideWidth")]    // the default stride over a smaller tile
    public void BadTileSizesAreRefusedAndChangeNothing(int? minHeight, int? minWidth, int? strideHeight, int? strideWidth, string param)
    {
        using var vae = AutoencoderDC.FromPretrained(Model);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => vae.EnableTiling(minHeight, minWidth, strideHeight, strideWidth));
        Assert.Equal(param, e.ParamName);
        output.WriteLine(e.Message);
        Assert.False(vae.UseTiling);
        Assert.Equal((512, 512, 448, 448), (vae.TileSampleMinHeight, vae.TileSampleMinWidth, vae.TileSampleStrideHeight, vae.TileSampleStrideWidth));
    }
}
