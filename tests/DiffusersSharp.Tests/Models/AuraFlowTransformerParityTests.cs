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
/// AuraFlowTransformer2DModel against diffusers' own forward on the tiny AuraFlow transformer of fixture
/// local-diffusers/auraflow-transformer (tools/reference/auraflow_transformer.py, diffusers 0.39.0 on torch 1.13 CPU,
/// float32): 2 joint + 2 single blocks, 3 heads × 8, pos_embed_max_size 80 (an 8 × 8 grid), batch 2, on a non-square
/// 8 × 12 latent (a 4 × 6 window of the grid), an odd 10 × 6 one (5 × 3) and the full 16 × 16, with timesteps as
/// AuraFlowPipeline passes them (t / 1000).
/// </summary>
public sealed class AuraFlowTransformerParityTests(ITestOutputHelper output) : IDisposable
{
    // Bound on max |diff| / max(1, max |expected|): measured 3.7e-6 (a), 3.3e-6 (b) and 4.9e-6 (c) absolute with max
    // |expected| 3.8, 5.4 and 4.4 (at most 1.1e-6 scaled); the bound is about twice that. Where it comes from, measured
    // once against diffusers run in float64 on the same weights: given the same sinusoidal timestep features, our float64
    // forward is within 2.7e-7 of diffusers' float64 one (the float32 FP32LayerNorms of both runs round apart) and our
    // float32 forward within 1.1e-6 of it, as diffusers' own float32 is of its float64 (1.7e-6). The rest is the features:
    // torch 1.13's float32 exp is an ulp off in 15 of the 128 frequencies (libtorch 2.10's differ in fewer), which at
    // t * 1000 near 1000 moves sin / cos by up to 2.8e-5; diffusers given our features lands where our output does.
    private const double Tolerance = 2e-6;
    private static readonly string Folder = Fixtures.Path("local-diffusers/auraflow-transformer/transformer");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/auraflow-transformer/expected.safetensors");
    private readonly AuraFlowTransformer2DModel _model = AuraFlowTransformer2DModel.FromPretrained(Folder);

    private Tensor E(string key) => _expected[key];

    [Theory]
    [InlineData("a")]
    [InlineData("b")]
    [InlineData("c")]
    public void ForwardMatchesDiffusers(string name)
    {
        using var _ = inference_mode();
        using var actual = _model.forward(E($"{name}.x"), E($"{name}.text"), E($"{name}.t"));
        Assert.Equal(E($"{name}.x").shape, actual.shape);
        double err = TensorAssert.Close(actual, E($"{name}.out"), Tolerance, name);
        output.WriteLine($"{name}: max |diff| {err:G3}, max |expected| {E($"{name}.out").abs().max().item<float>():G3}");
    }

    // bfloat16 against diffusers' own bfloat16 run of the same call (model cast with .to(torch.bfloat16), inputs and t / 1000
    // in bfloat16 as the pipeline passes them; torch 1.13 CPU). Measured: ours 0.083 relative L2 from diffusers' float32
    // output, diffusers' own 0.0824 (this tiny random model amplifies bfloat16 rounding through its four blocks), and ours
    // 0.0054 from diffusers' bfloat16 output: the two bfloat16 runs round alike, far closer to each other than to float32.
    // Bounds: at most 1.25 x diffusers' own error, and 3 x the measured distance to diffusers' bfloat16 output.
    [Fact]
    public void BFloat16IsAsCloseAsDiffusersOwnBFloat16()
    {
        using var half = AuraFlowTransformer2DModel.FromPretrained(Folder, ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, half.Dtype);
        using var _ = inference_mode();
        // As the pipeline passes them with bfloat16 latents: t / 1000 in the latents' dtype.
        using var t = E("a.t").to(ScalarType.BFloat16);
        using var actual = half.forward(E("a.x"), E("a.text"), t);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        double rel = TensorAssert.RelativeL2(actual, E("a.out"));
        double relDiffusers = TensorAssert.RelativeL2(E("a.bf16.out"), E("a.out"));
        double relToDiffusersBf16 = TensorAssert.RelativeL2(actual, E("a.bf16.out"));
        output.WriteLine($"bfloat16: relative L2 vs diffusers' float32 = {rel:G3} (diffusers' own bfloat16: {relDiffusers:G3}; ours vs theirs {relToDiffusersBf16:G3})");
        Assert.True(rel < 1.25 * relDiffusers, $"bfloat16: relative L2 {rel:G3} vs diffusers' own {relDiffusers:G3}");
        Assert.True(relToDiffusersBf16 < 1.6e-2, $"bfloat16: relative L2 {relToDiffusersBf16:G3} from diffusers' own bfloat16 output");
    }

    [Fact]
    public void TheTextAndTheTimestepMatter()
    {
        // Guards against a stream silently ignored: another caption or timestep changes the output.
        using var _ = inference_mode();
        using var baseline = _model.forward(E("a.x"), E("a.text"), E("a.t"));
        using var shorter = _model.forward(E("a.x"), E("a.text")[.., ..3], E("a.t"));
        using var later = _model.forward(E("a.x"), E("a.text"), E("a.t") * 0.5);
        Assert.True(TensorAssert.MaxAbsDiff(baseline, shorter) > 1e-2);
        Assert.True(TensorAssert.MaxAbsDiff(baseline, later) > 1e-2);
        // A scalar timestep is broadcast over the batch.
        using var scalar = _model.forward(E("b.x"), E("b.text"), tensor(0.5f));
        using var both = _model.forward(E("b.x"), E("b.text"), tensor(new[] { 0.5f, 0.5f }));
        Assert.Equal(0, TensorAssert.MaxAbsDiff(scalar, both));
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var _ = inference_mode();
        var (x, text, t) = (E("a.x"), E("a.text"), E("a.t"));
        string Refused(Action call) => Assert.Throws<ArgumentException>(call).Message;
        Assert.Contains("[B, 4, H, W]", Refused(() => _model.forward(x[.., ..3], text, t)));
        Assert.Contains("[B, 4, H, W]", Refused(() => _model.forward(x[0], text, t)));
        Assert.Contains("multiples of the patch size 2", Refused(() => _model.forward(x[.., .., ..7], text, t)));
        // pos_embed_max_size 80: an 8 x 8 grid, so 18 columns (9 patches) do not fit.
        using var wide = zeros(2, 4, 8, 18);
        Assert.Contains("8 x 8 position grid", Refused(() => _model.forward(wide, text, t)));
        Assert.Contains("joint_attention_dim", Refused(() => _model.forward(x, text[.., .., ..16], t)));
        Assert.Contains("[B=2, S, 32]", Refused(() => _model.forward(x, text[..1], t)));
        Assert.Contains("timestep", Refused(() => _model.forward(x, text, t.repeat(2))));
        Assert.Contains("timestep", Refused(() => _model.forward(x, text, t.view(2, 1))));
        Assert.Contains("hidden_states must be a floating-point", Refused(() => _model.forward(x.to(ScalarType.Int32), text, t)));
        Assert.Contains("encoder_hidden_states must be a floating-point", Refused(() => _model.forward(x, text.to(ScalarType.Int32), t)));
    }

    /// <summary>
    /// The full-size transformer built on the meta device has diffusers' state-dict tensor and element counts (counts.json
    /// of the fixture: diffusers 0.39.0's class built on meta) for AuraFlow v0.3's config (pos_embed_max_size 9216) and
    /// v0.1's (4096); the registry builds it from a config.json.
    /// </summary>
    [Theory]
    [InlineData("transformer.auraflow-v0.3", 6_858_605_568L)]
    [InlineData("transformer.auraflow-v0.1", 6_842_876_928L)]
    public void FullSizeHasDiffusersCounts(string key, long expectedElements)
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/auraflow-transformer/counts.json")))![key]!;
        var config = ConfigJson.Parse<AuraFlowTransformer2DModelConfig>(counts["config"]!.ToJsonString());
        using var model = new AuraFlowTransformer2DModel(config, new Device(DeviceType.META));
        var state = model.state_dict();
        long elements = state.Values.Sum(t => t.numel());
        output.WriteLine($"{key}: {elements:N0} elements, {state.Count} tensors");
        Assert.Equal((long)counts["elements"]!, elements);
        Assert.Equal(expectedElements, elements);
        Assert.Equal((int)counts["tensors"]!, state.Count);
        Assert.Equal(8192, AuraFlowFeedForward.FinalHiddenDim(4 * 3072));
        using var registered = ModelRegistry.Build("transformer", "AuraFlowTransformer2DModel", Folder, new Device(DeviceType.META));
        Assert.IsType<AuraFlowTransformer2DModel>(registered);
    }

    [Theory]
    [InlineData("num_single_dit_layers", "3", "single_transformer_blocks.2.")] // a block the weights lack: missing keys
    [InlineData("num_mmdit_layers", "1", "joint_transformer_blocks.1.")] // a block too few: unexpected keys
    [InlineData("pos_embed_max_size", "64", "pos_embed.pos_embed")] // the table's shape
    public void LoadingIsStrict(string field, string value, string key)
    {
        string dir = Directory.CreateTempSubdirectory("auraflow-strict").FullName;
        try
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, "config.json")))!;
            config[field] = JsonNode.Parse(value);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            File.Copy(Path.Combine(Folder, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            var e = Assert.Throws<WeightLoadException>(() => AuraFlowTransformer2DModel.FromPretrained(dir));
            Assert.Contains(key, e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("""{"caption_projection_dim": 2048}""", "caption_projection_dim (2048) must equal the inner width")]
    [InlineData("""{"num_attention_heads": 0}""", "num_attention_heads must be at least 1")]
    [InlineData("""{"pos_embed_max_size": 0}""", "pos_embed_max_size must be at least 1")]
    public void BadConfigsAreRefused(string json, string message)
    {
        var config = ConfigJson.Parse<AuraFlowTransformer2DModelConfig>(json);
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => new AuraFlowTransformer2DModel(config, new Device(DeviceType.META))).Message);
    }

    [Fact]
    public void NullOutChannelsMeansInChannels()
    {
        var config = ConfigJson.Parse<AuraFlowTransformer2DModelConfig>("""{"in_channels": 16, "out_channels": null}""");
        Assert.Equal(16, config.ResolvedOutChannels);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _model.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
