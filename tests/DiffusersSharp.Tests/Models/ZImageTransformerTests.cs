using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// ZImageTransformer2DModel against diffusers' own forward on the tiny Z-Image model of fixture local-diffusers/z-image
/// (tools/reference/z_image.py, diffusers 0.36.0 on torch 1.13 CPU, float32): two samples with captions of 7 and 40
/// tokens (padded to 32 and 64) and latents of 8 × 12 (24 patches, padded to 32) and 16 × 16 (64 patches), at t 0.25 and
/// 0.875, so every padding and batch mask is exercised. Bound 1e-5 × max(1, max |expected|), as the Flux and PixArt
/// transformer tests.
/// </summary>
public sealed class ZImageTransformerTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/z-image/expected.safetensors");
    private readonly ZImageTransformer2DModel _model = ZImageTransformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/z-image/transformer"));

    private Tensor E(string key) => _expected[key];

    private Tensor[] Inputs(string name) => [E($"tf.{name}.0"), E($"tf.{name}.1")];

    [Fact]
    public void ForwardMatchesDiffusers()
    {
        using var _ = inference_mode();
        var actual = _model.forward(Inputs("x"), E("tf.t"), Inputs("cap_feats"));
        Assert.Equal(2, actual.Count);
        for (int i = 0; i < 2; i++)
        {
            double error = TensorAssert.Close(actual[i], E($"tf.out.{i}"), Tolerance, $"sample {i}");
            output.WriteLine($"sample {i}: max |diff| {error:G3}, max |expected| {E($"tf.out.{i}").abs().max().item<float>():G3}");
            actual[i].Dispose();
        }
    }

    [Fact]
    public void EachSampleIsIndependentOfTheBatchPadding()
    {
        // Run alone, sample 1 (the longest in both sequences) needs no batch padding; sample 0 run alone needs none either.
        // Both must give what the padded batch gave: the padding is masked out, not attended to.
        using var _ = inference_mode();
        for (int i = 0; i < 2; i++)
        {
            var alone = _model.forward([E($"tf.x.{i}")], E("tf.t")[i..(i + 1)], [E($"tf.cap_feats.{i}")]);
            output.WriteLine($"sample {i} alone: max |diff| {TensorAssert.Close(alone[0], E($"tf.out.{i}"), Tolerance, $"sample {i} alone"):G3}");
            alone[0].Dispose();
        }
    }

    [Fact]
    public void TheCaptionMatters()
    {
        // Guards against a caption that is silently ignored: a shorter one changes the output.
        using var _ = inference_mode();
        using var baseline = _model.forward([E("tf.x.0")], E("tf.t")[..1], [E("tf.cap_feats.0")])[0];
        using var shorter = _model.forward([E("tf.x.0")], E("tf.t")[..1], [E("tf.cap_feats.0")[..5]])[0];
        Assert.True(TensorAssert.MaxAbsDiff(baseline, shorter) > 1e-3);
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var _ = inference_mode();
        var x = E("tf.x.0");
        var cap = E("tf.cap_feats.0");
        var t = E("tf.t")[..1];
        Assert.Contains("one caption per image", Assert.Throws<ArgumentException>(() => _model.forward([x, x], t, [cap])).Message);
        Assert.Contains("[16, F, H, W]", Assert.Throws<ArgumentException>(() => _model.forward([x[..8]], t, [cap])).Message);
        Assert.Contains("multiples of 2", Assert.Throws<ArgumentException>(() => _model.forward([x[.., .., ..7]], t, [cap])).Message);
        Assert.Contains("[L, 48]", Assert.Throws<ArgumentException>(() => _model.forward([x], t, [cap[.., ..40]])).Message);
        Assert.Contains("at least one token", Assert.Throws<ArgumentException>(() => _model.forward([x], t, [cap[..0]])).Message);
        Assert.Contains("patch pairs", Assert.Throws<ArgumentException>(() => _model.forward([x], t, [cap], patch_size: 1)).Message);
        Assert.Contains("one per sample", Assert.Throws<ArgumentException>(() => _model.forward([x], E("tf.t").repeat(2), [cap])).Message);
        // axes_lens [256, 32, 32]: 64 columns of patches are past the last column position, 260 caption tokens past the first axis.
        using var wide = zeros(16, 1, 8, 130);
        Assert.Contains("axes_lens", Assert.Throws<ArgumentException>(() => _model.forward([wide], t, [cap])).Message);
        using var longCaption = zeros(260, 48);
        Assert.Contains("axes_lens", Assert.Throws<ArgumentException>(() => _model.forward([x], t, [longCaption])).Message);
    }

    // Not a parity bound (the fixture is float32): a sanity bound for the half-precision paths (the captions go in as float32,
    // as given; the RMSNorm of the caption embedder returns the weights' type).
    [Theory]
    [InlineData(ScalarType.BFloat16, 5e-2)]
    [InlineData(ScalarType.Float16, 5e-3)]
    public void HalfPrecisionStaysCloseToFloat32(ScalarType dtype, double maxRelativeL2)
    {
        using var half = ZImageTransformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/z-image/transformer"), dtype);
        Assert.Equal(dtype, half.Dtype);
        using var _ = inference_mode();
        var actual = half.forward(Inputs("x"), E("tf.t"), Inputs("cap_feats"));
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(dtype, actual[i].dtype);
            var expected = E($"tf.out.{i}").to(ScalarType.Float64);
            double rel = (actual[i].to(ScalarType.Float64) - expected).norm().item<double>() / expected.norm().item<double>();
            output.WriteLine($"{dtype} sample {i}: relative L2 vs diffusers' float32 = {rel:G3}");
            Assert.True(rel < maxRelativeL2, $"{dtype}: relative L2 {rel:G3}");
        }
    }

    [Fact]
    public void LoadingIsStrict()
    {
        string dir = Directory.CreateTempSubdirectory("zimage-strict").FullName;
        try
        {
            var config = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/z-image/transformer/config.json")))!;
            config["n_layers"] = 3; // one block more than the weights hold
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            File.Copy(Fixtures.Path("local-diffusers/z-image/transformer/diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            var e = Assert.Throws<WeightLoadException>(() => ZImageTransformer2DModel.FromPretrained(dir));
            Assert.Contains("layers.2.", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>
    /// Z-Image-Turbo's full-size transformer (its config.json) built on the meta device has diffusers' state-dict tensor
    /// and element counts, as counts.json of the fixture records them (diffusers 0.36.0's class, built without memory).
    /// </summary>
    [Fact]
    public void FullSizeTurboHasDiffusersCounts()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/z-image/counts.json")))!["transformer.z-image-turbo"]!;
        var config = ConfigJson.Parse<ZImageTransformer2DModelConfig>(counts["config"]!.ToJsonString());
        Assert.Equal([1536, 512, 512], config.AxesLens);
        using var model = new ZImageTransformer2DModel(config, new Device(DeviceType.META));
        var state = model.state_dict();
        long elements = state.Values.Sum(t => t.numel());
        output.WriteLine($"Z-Image-Turbo: {elements:N0} elements, {state.Count} tensors");
        Assert.Equal((long)counts["elements"]!, elements);
        Assert.Equal((int)counts["tensors"]!, state.Count);
        Assert.Equal(10240, config.FeedForwardDim);
        Assert.Equal(256, config.AdaLnEmbedDim);
        using var registered = ModelRegistry.Build("transformer", "ZImageTransformer2DModel", Fixtures.Path("local-diffusers/z-image/transformer"), new Device(DeviceType.META));
        Assert.IsType<ZImageTransformer2DModel>(registered);
    }

    [Theory]
    [InlineData("""{"axes_dims": [32, 48, 40]}""", "add up to the head width")]
    [InlineData("""{"axes_dims": [32, 48], "axes_lens": [1, 2]}""", "three entries")]
    [InlineData("""{"all_patch_size": [2, 1], "all_f_patch_size": [1]}""", "one length")]
    [InlineData("""{"n_heads": 0}""", "n_heads must be positive")]
    public void BadConfigsAreRefused(string json, string message)
    {
        var config = ConfigJson.Parse<ZImageTransformer2DModelConfig>(json);
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => new ZImageTransformer2DModel(config, new Device(DeviceType.META))).Message);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _model.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
