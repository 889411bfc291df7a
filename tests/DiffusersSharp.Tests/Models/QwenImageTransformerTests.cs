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
/// QwenImageTransformer2DModel against diffusers' own forward on the tiny Qwen-Image model of fixture
/// local-diffusers/qwenimage (tools/reference/qwenimage.py, diffusers 0.39.0 on torch 1.13 CPU, float32): a batch of two
/// with an 8 × 6 packed grid and texts of 7 and 11 tokens (padded to 11, with the mask diffusers applies in every
/// attention), and one unmasked sample on an odd 5 × 4 grid (rows centred on −3 … 1). Bound 1e-5 × max(1, max
/// |expected|), as the Flux and Z-Image transformer tests.
/// </summary>
public sealed class QwenImageTransformerTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private static readonly string Folder = Fixtures.Path("local-diffusers/qwenimage/transformer");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/qwenimage/expected.safetensors");
    private readonly QwenImageTransformer2DModel _model = QwenImageTransformer2DModel.FromPretrained(Folder);

    private Tensor E(string key) => _expected[key];

    private Tensor Masked(QwenImageTransformer2DModel model, Tensor? mask) =>
        model.forward(E("tf.masked.x"), E("tf.masked.text"), mask, E("tf.masked.t"), (1, 8, 6));

    [Fact]
    public void MaskedBatchMatchesDiffusers()
    {
        using var _ = inference_mode();
        using var actual = Masked(_model, E("tf.masked.mask"));
        output.WriteLine($"masked batch: max |diff| {TensorAssert.Close(actual, E("tf.masked.out"), Tolerance, "masked batch"):G3}, max |expected| {E("tf.masked.out").abs().max().item<float>():G3}");
    }

    [Fact]
    public void OddGridWithoutMaskMatchesDiffusers()
    {
        using var _ = inference_mode();
        using var actual = _model.forward(E("tf.plain.x"), E("tf.plain.text"), null, E("tf.plain.t"), (1, 5, 4));
        output.WriteLine($"5 x 4 grid: max |diff| {TensorAssert.Close(actual, E("tf.plain.out"), Tolerance, "5 x 4 grid"):G3}");
    }

    [Fact]
    public void TheMaskHidesPaddedTextTokens()
    {
        // Sample 0's text is 7 tokens padded with zeros to 11. Masked, the padding must not count: the sample alone with its
        // 7 tokens gives the same output. Unmasked (diffusers before v0.37), the zero tokens are attended to and it differs.
        using var _ = inference_mode();
        using var alone = _model.forward(E("tf.masked.x")[..1], E("tf.masked.text")[..1, ..7], null, E("tf.masked.t")[..1], (1, 8, 6));
        TensorAssert.Close(alone, E("tf.masked.out")[..1], Tolerance, "sample 0 alone");
        using var unmasked = Masked(_model, null);
        Assert.True(TensorAssert.MaxAbsDiff(unmasked[..1], E("tf.masked.out")[..1]) > 1e-3, "the mask changed nothing");
    }

    [Fact]
    public void TextAndTimestepMatter()
    {
        using var _ = inference_mode();
        using var baseline = _model.forward(E("tf.plain.x"), E("tf.plain.text"), null, E("tf.plain.t"), (1, 5, 4));
        using var otherText = _model.forward(E("tf.plain.x"), E("tf.plain.text")[.., ..5], null, E("tf.plain.t"), (1, 5, 4));
        using var otherTime = _model.forward(E("tf.plain.x"), E("tf.plain.text"), null, E("tf.plain.t") * 0.5, (1, 5, 4));
        using var otherGrid = _model.forward(E("tf.plain.x"), E("tf.plain.text"), null, E("tf.plain.t"), (1, 4, 5));
        Assert.True(TensorAssert.MaxAbsDiff(baseline, otherText) > 1e-3);
        Assert.True(TensorAssert.MaxAbsDiff(baseline, otherTime) > 1e-3);
        Assert.True(TensorAssert.MaxAbsDiff(baseline, otherGrid) > 1e-3, "the grid shape must move the rotary positions");
    }

    [Fact]
    public void TheRotaryTableIsKeptForTheTwoTextLengthsOfCfg()
    {
        // A CFG loop alternates the prompt's and the negative prompt's text lengths: both tables stay, equal to fresh ones.
        using var rope = new QwenEmbedRope(10000, [8, 4, 4]);
        var positive = rope.forward(1, 5, 4, 9, CPU);
        var negative = rope.forward(1, 5, 4, 7, CPU);
        Assert.Same(positive.Cos, rope.forward(1, 5, 4, 9, CPU).Cos);
        Assert.Same(negative.Sin, rope.forward(1, 5, 4, 7, CPU).Sin);
        Assert.Equal([9L + 20, 16], positive.Cos.shape);
        using var fresh = new QwenEmbedRope(10000, [8, 4, 4]);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(positive.Sin, fresh.forward(1, 5, 4, 9, CPU).Sin));
        Assert.NotSame(positive.Cos, rope.forward(1, 4, 5, 9, CPU).Cos); // another grid: a third table, the oldest dropped
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var _ = inference_mode();
        var x = E("tf.plain.x");
        var text = E("tf.plain.text");
        var t = E("tf.plain.t");
        Assert.Contains("must multiply to the 20 image tokens", Assert.Throws<ArgumentException>(() => _model.forward(x, text, null, t, (1, 4, 4))).Message);
        Assert.Contains("in_channels", Assert.Throws<ArgumentException>(() => _model.forward(x[.., .., ..8], text, null, t, (1, 5, 4))).Message);
        Assert.Contains("joint_attention_dim", Assert.Throws<ArgumentException>(() => _model.forward(x, text[.., .., ..8], null, t, (1, 5, 4))).Message);
        Assert.Contains("encoder_hidden_states_mask", Assert.Throws<ArgumentException>(() => _model.forward(x, text, ones(1, 8), t, (1, 5, 4))).Message);
        Assert.Contains("timestep", Assert.Throws<ArgumentException>(() => _model.forward(x, text, null, t.repeat(3), (1, 5, 4))).Message);
        using var longText = zeros(1, 4095, 16); // starts at max(5 / 2, 4 / 2) = 2: positions 2 .. 4096
        Assert.Contains("4095", Assert.Throws<ArgumentOutOfRangeException>(() => _model.forward(x, longText, null, t, (1, 5, 4))).Message);
    }

    // Not a parity bound (the fixture is float32): a sanity bound for the half-precision paths, about twice the measured
    // relative L2 (bf16 0.0063, fp16 0.00074).
    [Theory]
    [InlineData(ScalarType.BFloat16, 1.5e-2)]
    [InlineData(ScalarType.Float16, 2e-3)]
    public void HalfPrecisionStaysCloseToFloat32(ScalarType dtype, double maxRelativeL2)
    {
        using var half = QwenImageTransformer2DModel.FromPretrained(Folder, dtype);
        using var _ = inference_mode();
        using var actual = Masked(half, E("tf.masked.mask"));
        Assert.Equal(dtype, actual.dtype);
        var expected = E("tf.masked.out").to(ScalarType.Float64);
        double rel = (actual.to(ScalarType.Float64) - expected).norm().item<double>() / expected.norm().item<double>();
        output.WriteLine($"{dtype}: relative L2 vs diffusers' float32 = {rel:G3}");
        Assert.True(rel < maxRelativeL2, $"{dtype}: relative L2 {rel:G3}");
    }

    [Fact]
    public void LoadingIsStrict()
    {
        string dir = Directory.CreateTempSubdirectory("qwenimage-strict").FullName;
        try
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, "config.json")))!;
            config["num_layers"] = 3; // one block more than the weights hold
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            File.Copy(Path.Combine(Folder, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            var e = Assert.Throws<WeightLoadException>(() => QwenImageTransformer2DModel.FromPretrained(dir));
            Assert.Contains("transformer_blocks.2.", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Qwen/Qwen-Image's full-size transformer built on the meta device has diffusers' state-dict counts (counts.json).</summary>
    [Fact]
    public void FullSizeHasDiffusersCounts()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/qwenimage/counts.json")))!["transformer.qwen-image"]!;
        var config = ConfigJson.Parse<QwenImageTransformer2DModelConfig>(counts["config"]!.ToJsonString());
        using var model = new QwenImageTransformer2DModel(config, new Device(DeviceType.META));
        var state = model.state_dict();
        long elements = state.Values.Sum(t => t.numel());
        output.WriteLine($"Qwen-Image: {elements:N0} elements, {state.Count} tensors");
        Assert.Equal((long)counts["elements"]!, elements);
        Assert.Equal((int)counts["tensors"]!, state.Count);
        using var registered = ModelRegistry.Build("transformer", "QwenImageTransformer2DModel", Folder, new Device(DeviceType.META));
        Assert.IsType<QwenImageTransformer2DModel>(registered);
    }

    [Theory]
    [InlineData("""{"axes_dims_rope": [16, 56, 48]}""", "add up to attention_head_dim")]
    [InlineData("""{"axes_dims_rope": [64, 64]}""", "three positive even widths")]
    [InlineData("""{"guidance_embeds": true}""", "guidance_embeds")]
    [InlineData("""{"zero_cond_t": true}""", "Edit-2511")]
    [InlineData("""{"use_layer3d_rope": true}""", "Layered")]
    [InlineData("""{"num_attention_heads": 0}""", "num_attention_heads must be positive")]
    public void BadConfigsAreRefused(string json, string message)
    {
        var config = ConfigJson.Parse<QwenImageTransformer2DModelConfig>(json);
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => new QwenImageTransformer2DModel(config, new Device(DeviceType.META))).Message);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _model.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
