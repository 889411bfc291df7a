using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// PixArtTransformer2DModel against diffusers' own forward on the tiny PixArt-Σ and PixArt-α models of fixture
/// local-diffusers/pixart (tools/reference/pixart.py, diffusers 0.36.0 on torch 1.13 CPU, float32): batch 2, an 8 × 12
/// latent, per-sample caption masks (one drops 7 of 12 tokens), timesteps 999 and 250, and for α the resolution and
/// aspect-ratio micro-conditions. Measured here: Σ 1.8e-6 (outputs up to 1.9) and α 1.9e-6 (up to 1.75); bound
/// 1e-5 × max(1, max |expected|) as the Flux transformer test.
/// </summary>
public sealed class PixArtTransformerTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/pixart/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    private static PixArtTransformer2DModel Load(string name) =>
        PixArtTransformer2DModel.FromPretrained(Fixtures.Path($"local-diffusers/pixart/{name}/transformer"));

    [Fact]
    public void SigmaForwardMatchesDiffusers()
    {
        using var model = Load("sigma");
        Assert.False(model.Config.UsesAdditionalConditions);
        using var _ = inference_mode();
        using var actual = model.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.timestep"), E("tf.encoder_attention_mask"));
        output.WriteLine($"sigma: max |diff| {TensorAssert.Close(actual, E("tf_sigma.out"), Tolerance, "sigma forward"):G3}, max |expected| {E("tf_sigma.out").abs().max().item<float>():G3}");
    }

    [Fact]
    public void AlphaForwardWithMicroConditionsMatchesDiffusers()
    {
        using var model = Load("alpha");
        Assert.True(model.Config.UsesAdditionalConditions);
        Assert.Equal(2, model.Config.InterpolationScaleOrDefault);
        using var _ = inference_mode();
        using var actual = model.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.timestep"), E("tf.encoder_attention_mask"),
            E("tf.resolution"), E("tf.aspect_ratio"));
        output.WriteLine($"alpha: max |diff| {TensorAssert.Close(actual, E("tf_alpha.out"), Tolerance, "alpha forward"):G3}, max |expected| {E("tf_alpha.out").abs().max().item<float>():G3}");
    }

    [Fact]
    public void TheMaskMatters()
    {
        // Guards against a mask that is silently ignored: dropping tokens must change the output.
        using var model = Load("sigma");
        using var _ = inference_mode();
        using var masked = model.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.timestep"), E("tf.encoder_attention_mask"));
        using var unmasked = model.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.timestep"));
        Assert.True(TensorAssert.MaxAbsDiff(masked[1], unmasked[1]) > 1e-3);
        Assert.True(TensorAssert.MaxAbsDiff(masked[0], unmasked[0]) < 1e-6); // sample 0 keeps all 12 tokens
    }

    /// <summary>
    /// Parameter counts and key counts of diffusers' PixArtTransformer2DModel at full size (caption_channels 4096), as
    /// diffusers 0.36.0 built them in the reference environment: PixArt-Σ-XL-2-1024-MS (use_additional_conditions false,
    /// interpolation_scale 2) and PixArt-XL-2-1024-MS (α: sample_size 128, so micro-conditions on).
    /// </summary>
    [Theory]
    [InlineData("sigma", 610_856_096L, 603)]
    [InlineData("alpha", 611_349_152L, 611)]
    public void FullSizeModelsHaveDiffusersParameterCounts(string name, long parameters, int keys)
    {
        var config = new PixArtTransformer2DModelConfig
        {
            CaptionChannels = 4096,
            InterpolationScale = name == "sigma" ? 2 : null,
            UseAdditionalConditions = name == "sigma" ? false : null,
        };
        using var model = new PixArtTransformer2DModel(config, new Device(DeviceType.META));
        long elements = model.state_dict().Values.Sum(t => t.numel());
        output.WriteLine($"{name}: {elements:N0} parameters, {model.state_dict().Count} keys");
        Assert.Equal(parameters, elements);
        Assert.Equal(keys, model.state_dict().Count);
    }

    [Fact]
    public void InvalidInputsFailBeforeCompute()
    {
        using var model = Load("sigma");
        using var _ = inference_mode();
        Tensor h = E("tf.hidden_states"), text = E("tf.encoder_hidden_states"), t = E("tf.timestep"), m = E("tf.encoder_attention_mask");
        Assert.Contains("channels", Assert.Throws<ArgumentException>(() => model.forward(randn(2, 3, 8, 12), text, t)).Message);
        Assert.Contains("divisible by the patch size", Assert.Throws<ArgumentException>(() => model.forward(randn(2, 4, 8, 11), text, t)).Message);
        Assert.Contains("encoder_hidden_states must be", Assert.Throws<ArgumentException>(() => model.forward(h, randn(2, 12, 95), t)).Message);
        Assert.Contains("encoder_hidden_states is required", Assert.Throws<ArgumentException>(() => model.forward(h, null, t)).Message);
        Assert.Contains("encoder_attention_mask", Assert.Throws<ArgumentException>(() => model.forward(h, text, t, m.narrow(1, 0, 11))).Message);
        Assert.Contains("timestep", Assert.Throws<ArgumentException>(() => model.forward(h, text, tensor(new long[] { 1, 2, 3 }))).Message);
        using var alpha = Load("alpha");
        Assert.Contains("additional conditions", Assert.Throws<ArgumentException>(() => alpha.forward(h, text, t, m)).Message);
        Assert.Contains("resolution", Assert.Throws<ArgumentException>(() => alpha.forward(h, text, t, m, ones(2, 3), ones(2, 1))).Message);
    }

    [Fact]
    public void InvalidConfigsAreRefused()
    {
        Assert.Contains("norm_type", Assert.Throws<ArgumentException>(() => new PixArtTransformer2DModelConfig { NormType = "ada_norm_zero" }.Validate()).Message);
        Assert.Contains("cross_attention_dim", Assert.Throws<ArgumentException>(() => new PixArtTransformer2DModelConfig { CaptionChannels = 4096, CrossAttentionDim = 1024 }.Validate()).Message);
        Assert.Contains("attention_type", Assert.Throws<ArgumentException>(() => new PixArtTransformer2DModelConfig { AttentionType = "gated" }.Validate()).Message);
    }

    [Fact]
    public void LoadingIsStrictAndTheRegistryKnowsTheClass()
    {
        string source = Fixtures.Path("local-diffusers/pixart/sigma/transformer");
        using (var meta = ModelRegistry.Build("transformer", "PixArtTransformer2DModel", source, new Device(DeviceType.META)))
        using (var model = Load("sigma"))
            Assert.Equal(model.state_dict().Keys.Order(), meta.state_dict().Keys.Order());
        string dir = Directory.CreateTempSubdirectory("pixartt").FullName;
        try
        {
            File.Copy(Path.Combine(source, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            // Without caption_channels the model has no caption_projection: its weights are then unexpected.
            File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(source, "config.json")).Replace("\"caption_channels\": 96", "\"caption_channels\": null"));
            var e = Assert.Throws<WeightLoadException>(() => PixArtTransformer2DModel.FromPretrained(dir));
            Assert.Contains("caption_projection.linear_1.weight", e.Unexpected);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ForwardLeavesNoTensorsBehind()
    {
        using var model = Load("alpha");
        using var _ = inference_mode();
        Tensor Run() => model.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.timestep"), E("tf.encoder_attention_mask"),
            E("tf.resolution"), E("tf.aspect_ratio"));
        using (var warm = Run()) { }
        long before = LiveTensors.Count();
        using (var y = Run()) { }
        Assert.Equal(before, LiveTensors.Count());
    }
}
