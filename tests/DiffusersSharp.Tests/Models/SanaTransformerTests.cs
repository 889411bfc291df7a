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
/// SanaTransformer2DModel against diffusers' own forward on the three tiny Sana transformers of fixture
/// local-diffusers/sana-transformer (tools/reference/sana_transformer.py, diffusers 0.39.0 on torch 1.13 CPU, float32):
/// a Sana-1600M-shaped model (no position embedding) on a non-square 8 × 12 latent with a padded caption, a model with
/// sin-cos positions (interpolation_scale 2) and 2 × 2 patches, and a Sana-Sprint-shaped model (q / k RMSNorms across
/// heads, the embedded guidance scale).
/// </summary>
public sealed class SanaTransformerTests(ITestOutputHelper output) : IDisposable
{
    // Bound on max |diff| / max(1, max |expected|): measured 3.8e-6 (sana, with and without the mask), 1.5e-6 (pe) and
    // 1.6e-6 (sprint) absolute, with max |expected| 3.8 to 4.2 (at most 9.3e-7 scaled); the bound is about twice that.
    // The sana cases' extra error is torch 1.13's: its float32 exp is an ulp off in some timestep frequencies, which at
    // t = 999 moves the sinusoidal features by up to 2.8e-5 from libtorch 2.10's; given our features, diffusers' output
    // is 1.1e-6 from ours (checked once with a patched Timesteps; see the fixture README).
    private const double Tolerance = 2e-6;
    private static readonly string SanaFolder = Fixtures.Path("local-diffusers/sana-transformer/sana");
    private static readonly string PeFolder = Fixtures.Path("local-diffusers/sana-transformer/pe");
    private static readonly string SprintFolder = Fixtures.Path("local-diffusers/sana-transformer/sprint");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/sana-transformer/expected.safetensors");
    private readonly SanaTransformer2DModel _sana = SanaTransformer2DModel.FromPretrained(SanaFolder);

    private Tensor E(string key) => _expected[key];

    private void Check(Tensor actual, string name)
    {
        double err = TensorAssert.Close(actual, E($"{name}.out"), Tolerance, name);
        output.WriteLine($"{name}: max |diff| {err:G3}, max |expected| {E($"{name}.out").abs().max().item<float>():G3}");
    }

    [Fact]
    public void SanaWithPaddedCaptionMatchesDiffusers()
    {
        using var _ = inference_mode();
        using var actual = _sana.forward(E("sana.x"), E("sana.text"), E("sana.t"), E("sana.mask"));
        Assert.Equal([2L, 8, 8, 12], actual.shape);
        Check(actual, "sana");
    }

    [Fact]
    public void SanaWithoutMaskMatchesDiffusers()
    {
        using var _ = inference_mode();
        using var actual = _sana.forward(E("sana.x"), E("sana.text"), E("sana.t"));
        Check(actual, "sana.nomask");
        // The padded tokens are attended to without the mask: the mask matters.
        Assert.True(TensorAssert.MaxAbsDiff(actual, E("sana.out")) > 1e-2, "the caption mask changed nothing");
    }

    [Fact]
    public void MaskAsIntegersOrBiasGivesTheSameOutput()
    {
        // The pipeline passes the tokenizer's int64 mask; diffusers also takes a ready [B, 1, S] bias as it is.
        using var _ = inference_mode();
        using var fromFloat = _sana.forward(E("sana.x"), E("sana.text"), E("sana.t"), E("sana.mask"));
        using var fromLong = _sana.forward(E("sana.x"), E("sana.text"), E("sana.t"), E("sana.mask").to(ScalarType.Int64));
        using var bias = ((1 - E("sana.mask")) * -10000.0).unsqueeze(1);
        using var fromBias = _sana.forward(E("sana.x"), E("sana.text"), E("sana.t"), bias);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(fromLong, fromFloat));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(fromBias, fromFloat));
    }

    [Fact]
    public void PositionEmbeddingAndPatchesMatchDiffusers()
    {
        using var pe = SanaTransformer2DModel.FromPretrained(PeFolder);
        using var _ = inference_mode();
        using var actual = pe.forward(E("pe.x"), E("pe.text"), E("pe.t"));
        Assert.Equal([2L, 8, 12, 8], actual.shape);
        Check(actual, "pe");
    }

    [Fact]
    public void SprintWithGuidanceMatchesDiffusers()
    {
        using var sprint = SanaTransformer2DModel.FromPretrained(SprintFolder);
        Assert.Equal((0.1, 1.0, "rms_norm_across_heads"), (sprint.Config.GuidanceEmbedsScale, sprint.Config.TimestepScale, sprint.Config.QkNorm));
        using var _ = inference_mode();
        using var actual = sprint.forward(E("sprint.x"), E("sprint.text"), E("sprint.t"), E("sprint.mask"), E("sprint.guidance"));
        Assert.Equal([2L, 8, 8, 8], actual.shape);
        Check(actual, "sprint");
        // The guidance scale is embedded: another scale gives another output.
        using var other = sprint.forward(E("sprint.x"), E("sprint.text"), E("sprint.t"), E("sprint.mask"), E("sprint.guidance") * 2);
        Assert.True(TensorAssert.MaxAbsDiff(other, actual) > 1e-3, "the guidance scale changed nothing");
    }

    [Fact]
    public void ScalarTimestepIsBroadcast()
    {
        using var _ = inference_mode();
        using var t = E("sana.t")[0].repeat(2);
        using var batched = _sana.forward(E("sana.x"), E("sana.text"), t, E("sana.mask"));
        using var scalar = _sana.forward(E("sana.x"), E("sana.text"), E("sana.t")[0], E("sana.mask"));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(scalar, batched));
    }

    [Fact]
    public void ForwardLeavesNoTensorsBehind()
    {
        using var _ = inference_mode();
        long before = LiveTensors.Count();
        using (var y = _sana.forward(E("sana.x"), E("sana.text"), E("sana.t"), E("sana.mask"))) { }
        Assert.Equal(before, LiveTensors.Count());
    }

    [Fact]
    public void CancellationIsHonouredBeforeTheBlocks()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        using var _ = inference_mode();
        Assert.Throws<OperationCanceledException>(() => _sana.forward(E("sana.x"), E("sana.text"), E("sana.t"), E("sana.mask"), cancellationToken: cts.Token));
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var _ = inference_mode();
        var (x, text, t, mask) = (E("sana.x"), E("sana.text"), E("sana.t"), E("sana.mask"));
        string Refused(Action call) => Assert.Throws<ArgumentException>(call).Message;
        Assert.Contains("in_channels", Refused(() => _sana.forward(x[.., ..4], text, t, mask)));
        Assert.Contains("4-D", Refused(() => _sana.forward(x[0], text, t, mask)));
        Assert.Contains("caption_channels=24", Refused(() => _sana.forward(x, text[.., .., ..8], t, mask)));
        Assert.Contains("encoder_hidden_states", Refused(() => _sana.forward(x, text[..1], t, mask)));
        Assert.Contains("encoder_attention_mask", Refused(() => _sana.forward(x, text, t, mask[.., ..6])));
        Assert.Contains("encoder_attention_mask", Refused(() => _sana.forward(x, text, t, mask[..1])));
        Assert.Contains("encoder_attention_mask", Refused(() => _sana.forward(x, text, t, mask.unsqueeze(0))));
        Assert.Contains("timestep", Refused(() => _sana.forward(x, text, t.repeat(3), mask)));
        Assert.Contains("guidance_embeds is false", Refused(() => _sana.forward(x, text, t, mask, t)));
        Assert.Contains("hidden_states must be floating point", Refused(() => _sana.forward(x.to(ScalarType.Int32), text, t, mask)));
        using var pe = SanaTransformer2DModel.FromPretrained(PeFolder);
        Assert.Contains("divisible by the patch size 2", Refused(() => pe.forward(E("pe.x")[.., .., ..11], E("pe.text"), E("pe.t"))));
        using var sprint = SanaTransformer2DModel.FromPretrained(SprintFolder);
        Assert.Contains("pass guidance", Refused(() => sprint.forward(E("sprint.x"), E("sprint.text"), E("sprint.t"), E("sprint.mask"))));
        Assert.Contains("guidance must be", Refused(() => sprint.forward(E("sprint.x"), E("sprint.text"), E("sprint.t"), E("sprint.mask"), E("sprint.guidance").repeat(2))));
    }

    // Not a parity bound (the fixture is float32): a sanity bound for bfloat16 weights and activations, about twice the
    // relative L2 of diffusers' own bfloat16 run of the same call on torch 1.13 (stored in the fixture: 0.0072 from its
    // float32 output; ours measures 0.0065, and 0.0073 from diffusers' bfloat16 output). The linear attention's float32
    // computation is not what this pins: done in bfloat16 instead it measured 0.0064 on this tiny model (16-wide heads,
    // 96 tokens; the CPU's bfloat16 matmul accumulates in float32), so that cast is checked by reading only.
    [Fact]
    public void BFloat16StaysCloseToFloat32()
    {
        using var half = SanaTransformer2DModel.FromPretrained(SanaFolder, ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, half.WeightDtype());
        using var _ = inference_mode();
        using var actual = half.forward(E("sana.x"), E("sana.text"), E("sana.t"), E("sana.mask"));
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        double rel = TensorAssert.RelativeL2(actual, E("sana.out"));
        double relDiffusers = TensorAssert.RelativeL2(E("sana.bf16.out"), E("sana.out"));
        double relToDiffusersBf16 = TensorAssert.RelativeL2(actual, E("sana.bf16.out"));
        output.WriteLine($"bfloat16: relative L2 vs diffusers' float32 = {rel:G3} (diffusers' own bfloat16: {relDiffusers:G3}; ours vs theirs {relToDiffusersBf16:G3})");
        Assert.True(rel < 1.5e-2, $"bfloat16: relative L2 {rel:G3}");
    }

    // A sanity bound for float16 (its clip of the linear attention's output included), about twice the measured relative
    // L2 against diffusers' float32 output (0.0012 on the Sprint model); no diffusers float16 run is stored.
    [Fact]
    public void Float16StaysCloseToFloat32()
    {
        using var half = SanaTransformer2DModel.FromPretrained(SprintFolder, ScalarType.Float16);
        using var _ = inference_mode();
        using var actual = half.forward(E("sprint.x"), E("sprint.text"), E("sprint.t"), E("sprint.mask"), E("sprint.guidance"));
        Assert.Equal(ScalarType.Float16, actual.dtype);
        double rel = TensorAssert.RelativeL2(actual, E("sprint.out"));
        output.WriteLine($"float16: relative L2 vs diffusers' float32 = {rel:G3}");
        Assert.True(rel < 2.5e-3, $"float16: relative L2 {rel:G3}");
    }

    [Theory]
    [InlineData("sana", "num_layers", "3", "transformer_blocks.2.")] // a block the weights lack: missing keys
    [InlineData("sana", "num_layers", "1", "transformer_blocks.1.")] // a block too few: unexpected keys
    [InlineData("sana", "qk_norm", "\"rms_norm_across_heads\"", "norm_q")] // Sprint's q / k norms are missing from Sana's weights
    [InlineData("sprint", "qk_norm", "null", "norm_q")] // Sprint's weights hold q / k norms the model lacks
    [InlineData("sana", "guidance_embeds", "true", "guidance_embedder")]
    [InlineData("sprint", "guidance_embeds", "false", "guidance_embedder")]
    [InlineData("sana", "norm_elementwise_affine", "true", "norm2")]
    [InlineData("sana", "attention_bias", "true", "attn1.to_q.bias")]
    public void LoadingIsStrict(string model, string field, string value, string key)
    {
        string folder = model == "sana" ? SanaFolder : SprintFolder;
        string dir = Directory.CreateTempSubdirectory("sana-strict").FullName;
        try
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
            config[field] = JsonNode.Parse(value);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            File.Copy(Path.Combine(folder, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            var e = Assert.Throws<WeightLoadException>(() => SanaTransformer2DModel.FromPretrained(dir));
            Assert.Contains(key, e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>The full-size Sana transformers built on the meta device have diffusers' state-dict counts (counts.json).</summary>
    [Theory]
    [InlineData("transformer.sana-1600m-1024px")]
    [InlineData("transformer.sana-600m-512px")]
    [InlineData("transformer.sana-sprint-1600m-1024px")]
    public void FullSizeHasDiffusersCounts(string name)
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/sana-transformer/counts.json")))![name]!;
        var config = ConfigJson.Parse<SanaTransformer2DModelConfig>(counts["config"]!.ToJsonString());
        using var model = new SanaTransformer2DModel(config, new Device(DeviceType.META));
        var state = model.state_dict();
        long elements = state.Values.Sum(t => t.numel());
        output.WriteLine($"{name}: {elements:N0} elements, {state.Count} tensors");
        Assert.Equal((long)counts["elements"]!, elements);
        Assert.Equal((int)counts["tensors"]!, state.Count);
    }

    [Fact]
    public void TheRegistryBuildsIt()
    {
        using var registered = ModelRegistry.Build("transformer", "SanaTransformer2DModel", SanaFolder, new Device(DeviceType.META));
        Assert.IsType<SanaTransformer2DModel>(registered);
    }

    [Fact]
    public void DefaultsAreSana1600M()
    {
        var config = ConfigJson.Parse<SanaTransformer2DModelConfig>("{}");
        Assert.Equal((32, 32, 70, 32, 20, 20, 112, 2240, 2304), (config.InChannels, config.OutChannelsOrIn, config.NumAttentionHeads, config.AttentionHeadDim,
            config.NumLayers, config.NumCrossAttentionHeads, config.CrossAttentionHeadDim, config.CrossAttentionDim, config.CaptionChannels));
        Assert.Equal((2.5, 1, 32, false, false, 1e-6), (config.MlpRatio, config.PatchSize, config.SampleSize, config.AttentionBias, config.NormElementwiseAffine, config.NormEps));
        Assert.Null(config.InterpolationScale);
        Assert.Null(config.QkNorm);
        Assert.False(config.GuidanceEmbeds);
        Assert.Equal(5600, config.FeedForwardHiddenDim);
    }

    [Theory]
    [InlineData("""{"cross_attention_dim": 1120}""", "cross_attention_dim must be 2240")]
    [InlineData("""{"cross_attention_dim": null}""", "are required")]
    [InlineData("""{"num_attention_heads": 0}""", "num_attention_heads must be positive")]
    [InlineData("""{"in_channels": 0}""", "in_channels must be positive")]
    [InlineData("""{"num_layers": -1}""", "num_layers must not be negative")]
    [InlineData("""{"qk_norm": "layer_norm"}""", "qk_norm 'layer_norm' is not supported")]
    [InlineData("""{"interpolation_scale": 0}""", "interpolation_scale must be positive")]
    [InlineData("""{"mlp_ratio": 0}""", "mlp_ratio")]
    [InlineData("""{"norm_eps": 0}""", "norm_eps")]
    public void BadConfigsAreRefused(string json, string message)
    {
        var config = ConfigJson.Parse<SanaTransformer2DModelConfig>(json);
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => new SanaTransformer2DModel(config, new Device(DeviceType.META))).Message);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _sana.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
