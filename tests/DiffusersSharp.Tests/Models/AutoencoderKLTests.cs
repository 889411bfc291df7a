using System.Text.Json;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

public class AutoencoderKLTests(ITestOutputHelper output)
{
    private static string VaeFolder => Fixtures.Path("tiny-sd3/model/vae");

    private static Tensor Expected(string key)
    {
        using var file = SafetensorsFile.Open(Fixtures.Path("tiny-sd3/expected.safetensors"));
        return file.Read(key).clone();
    }

    [Fact]
    public void EncodeMatchesDiffusers()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        Assert.Equal(8, vae.VaeScaleFactor);
        Assert.False(vae.Config.UseQuantConv);
        Assert.Equal(0.0609, vae.Config.ShiftFactor);
        using var posterior = vae.Encode(Expected("vae.x"));
        double meanErr = TensorAssert.Close(posterior.Mean, Expected("vae.latent_mean"), what: "latent mean");
        double stdErr = TensorAssert.Close(posterior.Std, Expected("vae.latent_std"), what: "latent std");
        output.WriteLine($"encode: max |mean - expected| = {meanErr:G3}, max |std - expected| = {stdErr:G3}");
    }

    [Fact]
    public void DecodeMatchesDiffusers()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var decoded = vae.Decode(Expected("vae.z"));
        double err = TensorAssert.Close(decoded, Expected("vae.decoded"), what: "decoded");
        output.WriteLine($"decode: max |ours - expected| = {err:G3}");
    }

    [Fact]
    public void FullSizeSd3VaeHasTheReferenceParameterCount()
    {
        var config = new AutoencoderKLConfig
        {
            LatentChannels = 16,
            BlockOutChannels = [128, 256, 512, 512],
            DownBlockTypes = Enumerable.Repeat("DownEncoderBlock2D", 4).ToArray(),
            UpBlockTypes = Enumerable.Repeat("UpDecoderBlock2D", 4).ToArray(),
            LayersPerBlock = 2,
            SampleSize = 1024,
            ScalingFactor = 1.5305,
            ShiftFactor = 0.0609,
            UseQuantConv = false,
            UsePostQuantConv = false,
        };
        using var vae = new AutoencoderKL(config, META);
        var stateDict = vae.state_dict();
        long elements = stateDict.Values.Sum(t => t.numel());
        using var meta = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("image-ops/meta.json")));
        var counts = meta.RootElement.GetProperty("parameter_counts");
        Assert.Equal(83_819_683L, counts.GetProperty("vae.sd3").GetInt64());
        Assert.Equal(244, counts.GetProperty("vae.sd3.keys").GetInt32());
        Assert.Equal(83_819_683L, elements);
        Assert.Equal(244, stateDict.Count);
        Assert.Equal(new long[] { 32, 512, 3, 3 }, stateDict["encoder.conv_out.weight"].shape);
        Assert.Equal(new long[] { 512, 16, 3, 3 }, stateDict["decoder.conv_in.weight"].shape);
        Assert.Equal(new long[] { 512, 512 }, stateDict["encoder.mid_block.attentions.0.to_out.0.weight"].shape);
        Assert.True(stateDict.ContainsKey("decoder.up_blocks.3.resnets.0.conv_shortcut.weight"));
        Assert.DoesNotContain(stateDict.Keys, k => k.Contains("quant_conv"));
        Assert.DoesNotContain(stateDict.Keys, k => k.StartsWith("decoder.up_blocks.3.upsamplers"));
        Assert.DoesNotContain(stateDict.Keys, k => k.StartsWith("encoder.down_blocks.3.downsamplers"));
        Assert.Equal(8, vae.VaeScaleFactor);
        Assert.Equal(1024, vae.TileSampleMinSize);
        Assert.Equal(128, vae.TileLatentMinSize);
    }

    [Fact]
    public void DefaultConfigIsTheDiffusersConstructorDefault()
    {
        var config = ConfigJson.Parse<AutoencoderKLConfig>("{}");
        Assert.Equal(3, config.InChannels);
        Assert.Equal(3, config.OutChannels);
        Assert.Equal(["DownEncoderBlock2D"], config.DownBlockTypes);
        Assert.Equal(["UpDecoderBlock2D"], config.UpBlockTypes);
        Assert.Equal([64], config.BlockOutChannels);
        Assert.Equal(1, config.LayersPerBlock);
        Assert.Equal("silu", config.ActFn);
        Assert.Equal(4, config.LatentChannels);
        Assert.Equal(32, config.NormNumGroups);
        Assert.Equal(32, config.SampleSize);
        Assert.Equal(0.18215, config.ScalingFactor);
        Assert.Null(config.ShiftFactor);
        Assert.Null(config.LatentsMean);
        Assert.Null(config.LatentsStd);
        Assert.True(config.ForceUpcast);
        Assert.True(config.UseQuantConv);
        Assert.True(config.UsePostQuantConv);
        Assert.True(config.MidBlockAddAttention);
        Assert.Equal(1, config.VaeScaleFactor);
    }

    [Fact]
    public void Sd15StyleConfigWithQuantConvsBuildsAndRuns()
    {
        manual_seed(0);
        var config = new AutoencoderKLConfig
        {
            BlockOutChannels = [16, 32],
            DownBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            UpBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D"],
            NormNumGroups = 8,
        };
        using var vae = new AutoencoderKL(config);
        vae.eval();
        var keys = vae.state_dict().Keys.ToHashSet();
        Assert.Contains("quant_conv.weight", keys);
        Assert.Contains("post_quant_conv.bias", keys);
        Assert.Equal(new long[] { 8, 8, 1, 1 }, vae.state_dict()["quant_conv.weight"].shape);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var x = rand(2, 3, 24, 16) * 2 - 1;
        using var posterior = vae.Encode(x);
        Assert.Equal(new long[] { 2, 4, 12, 8 }, posterior.Mean.shape);
        Assert.Equal(new long[] { 2, 8, 12, 8 }, posterior.Parameters.shape);
        var image = vae.Decode(posterior.Mode());
        Assert.Equal(new long[] { 2, 3, 24, 16 }, image.shape);
        Assert.True(image.isfinite().all().item<bool>());

        var noAttention = new AutoencoderKL(config with { MidBlockAddAttention = false }, META);
        Assert.DoesNotContain(noAttention.state_dict().Keys, k => k.Contains("attentions"));
    }

    [Fact]
    public void TilingOnlyKicksInAboveTheTileSize()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        vae.EnableTiling();
        Assert.Equal(64, vae.TileSampleMinSize);
        Assert.Equal(8, vae.TileLatentMinSize);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        TensorAssert.Close(vae.Decode(Expected("vae.z")), Expected("vae.decoded"), what: "decode below the tile size");
        using var posterior = vae.Encode(Expected("vae.x"));
        TensorAssert.Close(posterior.Mean, Expected("vae.latent_mean"), what: "encode below the tile size");

        // Forcing smaller tiles (32 px / 4 latents) makes the same 8x6 latent tile: same shape, different values.
        vae.TileSampleMinSize = 32;
        vae.TileLatentMinSize = 4;
        var tiled = vae.Decode(Expected("vae.z"));
        Assert.Equal(new long[] { 1, 3, 64, 48 }, tiled.shape);
        Assert.True(TensorAssert.MaxAbsDiff(tiled, Expected("vae.decoded")) > 1e-3);
        Assert.Throws<ArgumentOutOfRangeException>(() => vae.TileLatentMinSize = 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => vae.TileOverlapFactor = 1.0);
    }

    [Fact]
    public void TiledDecodeBlendsTilesAsDiffusersDoes()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var z = randn([1, 16, 14, 11], generator: new Generator(11));
        var whole = vae.Decode(z);
        vae.EnableTiling();
        var tiled = vae.Decode(z);
        Assert.Equal(new long[] { 1, 3, 112, 88 }, tiled.shape);

        // Independent re-derivation: tiles decoded one by one (8 latents, step 6), blended with vectorised ramps over
        // 16 pixels in diffusers' order (above, then left, each in place), cropped to 48 and concatenated.
        vae.DisableTiling();
        var tiles = new List<List<Tensor>>();
        for (int i = 0; i < 14; i += 6)
        {
            var row = new List<Tensor>();
            for (int j = 0; j < 11; j += 6)
                row.Add(vae.Decode(z.narrow(2, i, Math.Min(8, 14 - i)).narrow(3, j, Math.Min(8, 11 - j)).contiguous()));
            tiles.Add(row);
        }
        for (int i = 0; i < tiles.Count; i++)
            for (int j = 0; j < tiles[i].Count; j++)
            {
                if (i > 0) RampBlend(tiles[i - 1][j], tiles[i][j], 16, 2);
                if (j > 0) RampBlend(tiles[i][j - 1], tiles[i][j], 16, 3);
            }
        var expected = cat(tiles.Select(r => cat(r.Select(t => t.narrow(2, 0, Math.Min(48, t.shape[2])).narrow(3, 0, Math.Min(48, t.shape[3]))).ToList(), 3)).ToList(), 2);
        double structureErr = TensorAssert.MaxAbsDiff(tiled, expected);
        Assert.True(structureErr <= 1e-5, $"tiled decode differs from the re-derived blend by {structureErr:G3}");

        // Against the untiled decode: a random-weight VAE has a global mid-block attention, so tiles cannot agree
        // exactly; the blend must keep them in the same range (no seams of a different scale, nothing lost).
        double scale = whole.abs().max().item<float>();
        var interior = (tiled - whole).narrow(2, 8, 96).narrow(3, 8, 72).abs();
        double interiorMax = interior.max().item<float>();
        double interiorMean = interior.mean().item<float>();
        output.WriteLine($"tiled vs re-derived blend: {structureErr:G3}; tiled vs untiled interior: max {interiorMax:G3}, mean {interiorMean:G3} (max |untiled| {scale:G3})");
        Assert.True(interiorMean < 0.1 * scale, $"interior mean |tiled - untiled| {interiorMean:G3} vs max |untiled| {scale:G3}");
    }

    private static void RampBlend(Tensor a, Tensor b, int extent, int dim)
    {
        long e = Math.Min(Math.Min(a.shape[dim], b.shape[dim]), extent);
        var shape = new long[] { 1, 1, 1, 1 };
        shape[dim] = e;
        var w = (arange(e, ScalarType.Float64) / e).reshape(shape);
        var head = b.narrow(dim, 0, e);
        var tail = a.narrow(dim, a.shape[dim] - e, e);
        head.copy_(tail * (1 - w).to(a.dtype) + head * w.to(a.dtype));
    }

    [Fact]
    public void TiledEncodeCoversTheImage()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var x = rand([1, 3, 112, 88], generator: new Generator(5)) * 2 - 1;
        using var whole = vae.Encode(x);
        vae.EnableTiling();
        using var tiled = vae.Encode(x);
        Assert.Equal(whole.Mean.shape, tiled.Mean.shape);
        Assert.True(tiled.Parameters.isfinite().all().item<bool>());
        // The top-left 6x6 latents come from the first tile alone (row limit 8 - blend 2 = 6): a plain encode of that
        // tile gives them exactly.
        vae.DisableTiling();
        using var first = vae.Encode(x.narrow(2, 0, 64).narrow(3, 0, 64).contiguous());
        double err = TensorAssert.MaxAbsDiff(tiled.Parameters.narrow(2, 0, 6).narrow(3, 0, 6), first.Parameters.narrow(2, 0, 6).narrow(3, 0, 6));
        Assert.True(err <= 1e-6, $"first tile differs by {err:G3}");
        double meanDiff = (tiled.Mean - whole.Mean).abs().mean().item<float>();
        double meanScale = whole.Mean.abs().max().item<float>();
        output.WriteLine($"tiled vs untiled encode: mean |diff| {meanDiff:G3} (max |mean| {meanScale:G3})");
    }

    [Fact]
    public void SlicedBatchesRunOneItemAtATime()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var x = rand([2, 3, 64, 48], generator: new Generator(3)) * 2 - 1;
        var z = randn([2, 16, 8, 6], generator: new Generator(4));
        using var whole = vae.Encode(x);
        var decodedWhole = vae.Decode(z);
        using var first = vae.Encode(x.narrow(0, 0, 1));
        using var second = vae.Encode(x.narrow(0, 1, 1));
        var itemByItem = cat([vae.Decode(z.narrow(0, 0, 1)), vae.Decode(z.narrow(0, 1, 1))], 0);
        vae.EnableSlicing();
        using var sliced = vae.Encode(x);
        var decodedSliced = vae.Decode(z);

        // Sliced = the items run one by one, bit for bit.
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(sliced.Parameters, cat([first.Parameters, second.Parameters], 0)));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(decodedSliced, itemByItem));
        // Against the batched run it is rounding-level only: libtorch's CPU conv2d picks batch-size-dependent kernels
        // (a single 3x3 conv differs by ~1e-6 between batch 2 and batch 1 here), as PyTorch does under diffusers.
        double encErr = TensorAssert.Close(sliced.Parameters, whole.Parameters, 1e-5, "sliced encode");
        double decErr = TensorAssert.Close(decodedSliced, decodedWhole, 1e-5, "sliced decode");
        output.WriteLine($"sliced vs batched: encode {encErr:G3}, decode {decErr:G3}");
    }

    [Theory]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    public void HalfPrecisionRunsOnCpu(ScalarType dtype)
    {
        using var vae32 = AutoencoderKL.FromPretrained(VaeFolder);
        using var vae16 = AutoencoderKL.FromPretrained(VaeFolder, dtype);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var x = Expected("vae.x");
        var z = Expected("vae.z");
        using var p32 = vae32.Encode(x);
        using var p16 = vae16.Encode(x.to(dtype));
        Assert.Equal(dtype, p16.Mean.dtype);
        var d32 = vae32.Decode(z);
        var d16 = vae16.Decode(z.to(dtype));
        Assert.Equal(dtype, d16.dtype);
        double encRel = TensorAssert.RelativeL2(p16.Mean, p32.Mean);
        double decRel = TensorAssert.RelativeL2(d16, d32);
        output.WriteLine($"{dtype}: relative L2 vs float32: encode mean {encRel:G3}, decode {decRel:G3}");
        double bound = dtype == ScalarType.BFloat16 ? 5e-2 : 1e-2; // a few units of 2^-8 / 2^-11 after ~40 layers
        Assert.True(encRel < bound, $"encode relative L2 {encRel:G3}");
        Assert.True(decRel < bound, $"decode relative L2 {decRel:G3}");
    }


    [Fact]
    public void BadInputsThrowBeforeCompute()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var e = Assert.Throws<ArgumentException>(() => vae.Encode(zeros(1, 4, 64, 48)));
        Assert.Contains("3 channels", e.Message);
        e = Assert.Throws<ArgumentException>(() => vae.Encode(zeros(1, 3, 60, 48)));
        Assert.Contains("multiples of the VAE scale factor 8", e.Message);
        e = Assert.Throws<ArgumentException>(() => vae.Encode(zeros(3, 64, 48)));
        Assert.Contains("NCHW", e.Message);
        e = Assert.Throws<ArgumentException>(() => vae.Encode(zeros(1, 3, 64, 48, ScalarType.BFloat16)));
        Assert.Contains("BFloat16", e.Message);
        e = Assert.Throws<ArgumentException>(() => vae.Decode(zeros(1, 4, 8, 6)));
        Assert.Contains("16 channels", e.Message);
        Assert.Throws<DirectoryNotFoundException>(() => AutoencoderKL.FromPretrained(Fixtures.Path("no-such-vae")));
        Assert.Throws<ArgumentException>(() => new AutoencoderKL(new AutoencoderKLConfig { BlockOutChannels = [64, 64] }, META));
    }

    [Fact]
    public void EncodeAndDecodeLeaveOnlyTheirResultsAlive()
    {
        using var vae = AutoencoderKL.FromPretrained(VaeFolder);
        using var _ = inference_mode();
        var x = Expected("vae.x");
        var z = randn([2, 16, 10, 9], generator: new Generator(2));
        vae.EnableTiling();
        vae.EnableSlicing();
        long before = LiveTensors.Count();
        using (var posterior = vae.Encode(x))
            Assert.Equal(before + 5, DisposeScopeManager.Statistics.ThreadTotalLiveCount); // parameters, mean, logvar, std, var
        using (var decoded = vae.Decode(z))
            Assert.Equal(before + 1, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        x.Dispose();
        z.Dispose();
    }

    [Fact]
    public void LoadingIsStrictAboutTheConfig()
    {
        string dir = Directory.CreateTempSubdirectory("vae").FullName;
        try
        {
            File.Copy(Path.Combine(VaeFolder, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            string json = File.ReadAllText(Path.Combine(VaeFolder, "config.json")).Replace("\"use_quant_conv\": false", "\"use_quant_conv\": true");
            File.WriteAllText(Path.Combine(dir, "config.json"), json);
            var e = Assert.Throws<WeightLoadException>(() => AutoencoderKL.FromPretrained(dir));
            Assert.Contains("quant_conv.weight", e.Message);
            File.Delete(Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            Assert.Throws<FileNotFoundException>(() => AutoencoderKL.FromPretrained(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void PosteriorSampleIsMeanPlusStdTimesSeededNoise()
    {
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var moments = randn([2, 8, 5, 3], generator: new Generator(9));
        using var posterior = new DiagonalGaussianDistribution(moments);
        var sample = posterior.Sample(new Generator(123456));
        var eps = randn([2, 4, 5, 3], dtype: ScalarType.Float32, generator: new Generator(123456));
        var expected = posterior.Mean + (0.5 * moments.narrow(1, 4, 4)).exp() * eps;
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(sample, expected));
        Assert.True(TensorAssert.MaxAbsDiff(sample, posterior.Sample(new Generator(7))) > 0.1);
        using var mode = posterior.Mode();
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(mode, moments.narrow(1, 0, 4)));

        // logvar is clamped to [-30, 20] before std = exp(0.5 * logvar).
        var extreme = cat([zeros(1, 1, 1, 1), full(1, 1, 1, 1, 100f)], 1);
        using var clamped = new DiagonalGaussianDistribution(extreme);
        Assert.Equal(20f, clamped.LogVar.item<float>());
        Assert.Equal(MathF.Exp(10f), clamped.Std.item<float>(), 1e-6f * MathF.Exp(10f));
    }
}
