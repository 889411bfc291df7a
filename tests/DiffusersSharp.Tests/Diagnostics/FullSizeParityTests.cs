using System.Text.Json.Nodes;
using DiffusersSharp.Diagnostics;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Diagnostics;

/// <summary>
/// The full-size check's procedure on tiny configs and a CPU generator. The check itself (CUDA generator, full size)
/// runs only on a GPU machine: see docs/gpu-checks.md.
/// </summary>
public class FullSizeParityTests(ITestOutputHelper output)
{
    private static SD3Transformer2DModelConfig TinyTransformer =>
        ConfigJson.Read<SD3Transformer2DModelConfig>(Fixtures.Path("tiny-sd3/model/transformer/config.json"));

    private static AutoencoderKLConfig TinyVae =>
        ConfigJson.Read<AutoencoderKLConfig>(Fixtures.Path("tiny-sd3/model/vae/config.json"));

    private static readonly TransformerReplayShape TinyShape = new(Batch: 2, LatentHeight: 8, LatentWidth: 12, TextTokens: 5);

    private static bool Equal(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void FixtureConfigsBuildOnMetaWithDiffusersKeyCounts()
    {
        var fixture = FullSizeFixture.Open(Fixtures.Path("full-size"));
        Assert.Equal(20261127, fixture.TransformerSeed);
        Assert.Equal(20261128, fixture.VaeSeed);
        Assert.Equal(24, fixture.TransformerConfig.NumLayers);
        Assert.Equal(Enumerable.Range(0, 13), fixture.TransformerConfig.DualAttentionLayers);
        Assert.Equal(384, fixture.TransformerConfig.PosEmbedMaxSize);
        Assert.False(fixture.VaeConfig.UseQuantConv);

        using var transformer = new SD3Transformer2DModel(fixture.TransformerConfig, new Device(DeviceType.META), ScalarType.BFloat16);
        var keys = transformer.state_dict();
        Assert.Equal(fixture.TransformerKeys, keys.Count);
        // diffusers keeps the position table as a persistent buffer: it is a key, drawn in its place like a weight.
        Assert.Equal(new long[] { 1, 384 * 384, 1536 }, keys["pos_embed.pos_embed"].shape);
        Assert.All(keys.Values, t => Assert.Equal(ScalarType.BFloat16, t.dtype));
        using var vae = new AutoencoderKL(fixture.VaeConfig, new Device(DeviceType.META), ScalarType.BFloat16);
        Assert.Equal(fixture.VaeKeys, vae.state_dict().Count);

        using var hidden = fixture.Expected("transformer.hidden_states");
        Assert.Equal(new long[] { 2, 16, 128, 128 }, hidden.shape);
        Assert.Throws<KeyNotFoundException>(() => fixture.Expected("transformer.nothing"));
    }

    [Fact]
    public void FillDrawsEveryKeyInOrdinalOrder()
    {
        using var model = new SD3Transformer2DModel(TinyTransformer, new Device(DeviceType.META), ScalarType.Float32);
        var natural = model.state_dict().Keys.ToList();
        var sorted = natural.OrderBy(k => k, StringComparer.Ordinal).ToList();
        Assert.NotEqual(natural, sorted); // otherwise this test could not tell the orders apart

        using var generator = new Generator("cpu").ManualSeed(31);
        var order = DiffusersSharp.Benchmarks.RandomWeights.Fill(model, CPU, 0.02, generator);
        Assert.Equal(sorted, order);

        using var manual = new torch.Generator(31);
        var state = model.state_dict();
        foreach (var key in sorted)
        {
            using var drawn = randn(state[key].shape, dtype: ScalarType.Float32, generator: manual);
            using var expected = drawn * 0.02;
            Assert.True(Equal(state[key], expected), $"{key} is not the draw at its ordinal place");
        }
        Assert.All(state.Values, t => Assert.Equal(DeviceType.CPU, t.device_type));
    }

    [Fact]
    public void FillCastsEachFloat32DrawToTheTensorsDtype()
    {
        using var model = new AutoencoderKL(TinyVae, new Device(DeviceType.META), ScalarType.BFloat16);
        using var generator = new Generator("cpu").ManualSeed(5);
        var order = DiffusersSharp.Benchmarks.RandomWeights.Fill(model, CPU, 0.02, generator);
        Assert.Equal(model.state_dict().Count, order.Count);
        using var manual = new torch.Generator(5);
        var state = model.state_dict();
        foreach (var key in order)
        {
            using var drawn = randn(state[key].shape, dtype: ScalarType.Float32, generator: manual);
            using var scaled = drawn * 0.02;
            using var expected = scaled.to(ScalarType.BFloat16);
            Assert.True(Equal(state[key], expected), $"{key}: not randn(float32) * 0.02 cast to bfloat16");
        }
    }

    [Fact]
    public void TransformerReplayIsDeterministicAndDrawsInputsAfterTheWeights()
    {
        TransformerReplay Run(long seed)
        {
            using var g = new Generator("cpu").ManualSeed(seed);
            return FullSizeParity.ReplayTransformer(TinyTransformer, g, CPU, ScalarType.Float32, TinyShape, timedRuns: 1);
        }
        using var a = Run(20261127);
        using var b = Run(20261127);
        using var c = Run(20261128);
        Assert.Equal(new long[] { 2, 16, 8, 12 }, a.Output.shape);
        Assert.Equal(ScalarType.Float32, a.Output.dtype);
        Assert.True(Equal(a.Output, b.Output), "same seed, different outputs");
        Assert.True(Equal(a.HiddenStates, b.HiddenStates));
        Assert.False(Equal(a.Output, c.Output), "another seed gave the same output");
        Assert.NotNull(a.ForwardMs);

        // The replay check: hidden_states is the first draw after the weights, from the same stream.
        using var manual = new torch.Generator(20261127);
        using var shell = new SD3Transformer2DModel(TinyTransformer, new Device(DeviceType.META), ScalarType.Float32);
        foreach (var (_, t) in shell.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal))
            randn(t.shape, dtype: ScalarType.Float32, generator: manual).Dispose();
        using var hidden = randn([2, 16, 8, 12], dtype: ScalarType.Float32, generator: manual);
        Assert.True(Equal(hidden, a.HiddenStates), "hidden_states is not the draw after the weights");
        output.WriteLine($"tiny transformer: fill {a.FillMs:F1} ms, first forward {a.FirstForwardMs:F1} ms, forward {a.ForwardMs:F1} ms");
    }

    [Fact]
    public void TransformerReplayRejectsALatentTheModelCannotTake()
    {
        using var g = new Generator("cpu").ManualSeed(1);
        var e = Assert.Throws<ArgumentException>(() =>
            FullSizeParity.ReplayTransformer(TinyTransformer, g, CPU, ScalarType.Float32, TinyShape with { LatentHeight = 7 }));
        Assert.Contains("patch size", e.Message);
        Assert.Throws<ArgumentException>(() =>
            FullSizeParity.ReplayTransformer(TinyTransformer, g, CPU, ScalarType.Float32, TinyShape with { LatentWidth = 66 }));
    }

    [Fact]
    public void VaeReplayIsDeterministicInBfloat16()
    {
        VaeReplay Run(long seed)
        {
            using var g = new Generator("cpu").ManualSeed(seed);
            return FullSizeParity.ReplayVae(TinyVae, g, CPU, ScalarType.BFloat16, latentSize: 4);
        }
        using var a = Run(20261128);
        using var b = Run(20261128);
        using var c = Run(3);
        Assert.Equal(new long[] { 1, 3, 32, 32 }, a.Decoded.shape);
        Assert.Equal(new long[] { 1, 16, 4, 4 }, a.LatentMean.shape);
        Assert.Equal(ScalarType.Float32, a.Decoded.dtype);
        Assert.True(Equal(a.Decoded, b.Decoded) && Equal(a.LatentMean, b.LatentMean), "same seed, different outputs");
        Assert.False(Equal(a.Decoded, c.Decoded), "another seed gave the same image");
        Assert.Null(a.DecodeMs);
    }

    [Fact]
    public void ComparisonMeasuresRelativeL2AndMaxError()
    {
        using var expected = tensor(new float[] { 1, 2, 3, 5 }).reshape(2, 2);
        using var actual = tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        var c = TensorComparison.Of("t", actual, expected);
        Assert.Equal(1 / Math.Sqrt(39), c.RelativeL2, 12);
        Assert.Equal(1.0, c.MaxAbsError);
        Assert.Equal(5.0, c.ExpectedMaxAbs);
        Assert.Equal(Math.Sqrt(39 / 4.0), c.ExpectedRms, 12);
        Assert.False(c.Exact);
        Assert.Equal(new long[] { 2, 2 }, c.Shape);

        using var shifted = tensor(new float[] { 0, 2, 3, 7 }).reshape(2, 2); // diff (-1, 0, 0, 2)
        var d = TensorComparison.Of("t", shifted, expected);
        Assert.Equal(Math.Sqrt(5) / Math.Sqrt(39), d.RelativeL2, 12);
        Assert.Equal(2.0, d.MaxAbsError);

        using var bf = expected.to(ScalarType.BFloat16);
        Assert.True(TensorComparison.Of("t", bf, expected).Exact); // dtypes may differ: values are compared
        using var zero = zeros(2, 2);
        Assert.Equal(0, TensorComparison.Of("z", zero, zero).RelativeL2);
        Assert.Equal(double.PositiveInfinity, TensorComparison.Of("z", actual, zero).RelativeL2);
    }

    [Fact]
    public void ComparisonRejectsMismatchedShapesAndNaN()
    {
        using var a = zeros(2, 3);
        using var b = zeros(3, 2);
        Assert.Contains("shape", Assert.Throws<ArgumentException>(() => TensorComparison.Of("x", a, b)).Message);
        using var nan = full(2, 3, float.NaN);
        Assert.Contains("NaN", Assert.Throws<ArgumentException>(() => TensorComparison.Of("x", nan, a)).Message);
    }

    [Fact]
    public void PassesNeedsTheReplayExactAndEveryErrorWithinTheBudget()
    {
        var ok = new TensorComparison("out", [1], 0.01, 0.1, 1, 1);
        var far = ok with { RelativeL2 = 0.05 };
        var exact = new TensorComparison("hidden", [1], 0, 0, 1, 1);
        var inexact = exact with { RelativeL2 = 1e-3, MaxAbsError = 1e-3 };
        var timings = new Dictionary<string, double>();
        Assert.True(new ComponentParity("transformer", 909, 909, exact, [ok], timings).Passes(0.02));
        Assert.False(new ComponentParity("transformer", 909, 909, exact, [ok, far], timings).Passes(0.02));
        Assert.False(new ComponentParity("transformer", 909, 909, inexact, [ok], timings).Passes(0.02));
        Assert.False(new ComponentParity("transformer", 908, 909, exact, [ok], timings).Passes(0.02));
        Assert.True(new ComponentParity("vae", 244, 244, null, [ok], timings).Passes(0.02));
    }

    [Fact]
    public void CheckRunsThePlumbingOnATinyCpuFixture()
    {
        // A tiny fixture in the full-size layout whose "expected" tensors come from an independent draw with
        // torch.Generator (hidden_states) and from one replay (outputs): this checks the wiring of CheckTransformer /
        // CheckVae (seeds, shapes read from the fixture, key counts, comparisons), not parity with diffusers.
        string dir = Directory.CreateTempSubdirectory("fullsize-").FullName;
        try
        {
            var meta = new JsonObject
            {
                ["machine"] = "test",
                ["transformer"] = new JsonObject { ["config"] = JsonNode.Parse(File.ReadAllText(Fixtures.Path("tiny-sd3/model/transformer/config.json"))), ["seed"] = 7, ["keys"] = 0 },
                ["vae"] = new JsonObject { ["config"] = JsonNode.Parse(File.ReadAllText(Fixtures.Path("tiny-sd3/model/vae/config.json"))), ["seed"] = 8, ["keys"] = 0 },
            };
            using var shell = new SD3Transformer2DModel(TinyTransformer, new Device(DeviceType.META), ScalarType.BFloat16);
            using var vaeShell = new AutoencoderKL(TinyVae, new Device(DeviceType.META), ScalarType.BFloat16);
            meta["transformer"]!["keys"] = shell.state_dict().Count;
            meta["vae"]!["keys"] = vaeShell.state_dict().Count;
            File.WriteAllText(Path.Combine(dir, "meta.json"), meta.ToJsonString());

            var tinyShape = new TransformerReplayShape(2, 8, 8, 333);
            using var g1 = new Generator("cpu").ManualSeed(7);
            using var t = FullSizeParity.ReplayTransformer(TinyTransformer, g1, CPU, ScalarType.BFloat16, tinyShape);
            using var g2 = new Generator("cpu").ManualSeed(8);
            using var v = FullSizeParity.ReplayVae(TinyVae, g2, CPU, ScalarType.BFloat16, latentSize: 4);
            using var perturbed = v.LatentMean + 0.5;
            SafetensorsWriter.Save(Path.Combine(dir, "expected.safetensors"), new Dictionary<string, Tensor>
            {
                ["transformer.hidden_states"] = t.HiddenStates,
                ["transformer.out"] = t.Output,
                ["vae.decoded"] = v.Decoded,
                ["vae.latent_mean"] = perturbed,
            });

            var fixture = FullSizeFixture.Open(dir);
            var tr = FullSizeParity.CheckTransformer(fixture, CPU, timedRuns: 0);
            Assert.True(tr.Replay!.Exact);
            Assert.Equal(0, tr.Outputs.Single().RelativeL2);
            Assert.True(tr.Passes(1e-9));
            Assert.False(tr.Timings.ContainsKey("forward"));

            var vr = FullSizeParity.CheckVae(fixture, CPU, timedRuns: 1);
            Assert.Equal(["vae.decoded", "vae.latent_mean"], vr.Outputs.Select(o => o.Name));
            Assert.True(vr.Outputs[0].Exact);
            Assert.Equal(0.5, vr.Outputs[1].MaxAbsError, 6);
            Assert.False(vr.Passes(0.02));
            Assert.True(vr.Timings.ContainsKey("decode") && vr.Timings.ContainsKey("encode"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
