using System.Text.Json;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// ChromaTransformer2DModel against diffusers' own forward on the tiny Chroma model of fixture local-diffusers/chroma
/// (tools/reference/chroma.py, diffusers 0.36.0 on torch 1.13 CPU, float32): batch 2, a 4 × 5 token latent, 12 text
/// tokens, timesteps 1.0 and 0.3125, with a partial float attention mask (sample 0 keeps 7 of 12 text tokens) and without
/// a mask. Bound 1e-5 × max(1, max |expected|) as the Flux transformer test; measured here: 9.5e-7 with the mask and
/// 7.2e-7 without (outputs up to 2.7).
/// </summary>
public sealed class ChromaTransformerTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private const string Folder = "local-diffusers/chroma/transformer";
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/chroma/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    private static ChromaTransformer2DModel Load() => ChromaTransformer2DModel.FromPretrained(Fixtures.Path(Folder));

    private Tensor Run(ChromaTransformer2DModel model, Tensor? mask) =>
        model.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.timestep"), E("tf.img_ids"), E("tf.txt_ids"), mask);

    [Fact]
    public void ForwardWithAPartialMaskMatchesDiffusers()
    {
        using var model = Load();
        using var _ = inference_mode();
        using var actual = Run(model, E("tf.attention_mask"));
        output.WriteLine($"masked: max |diff| {TensorAssert.Close(actual, E("tf.out"), Tolerance, "masked forward"):G3}, max |expected| {E("tf.out").abs().max().item<float>():G3}");
    }

    [Fact]
    public void ForwardWithoutMaskMatchesDiffusers()
    {
        using var model = Load();
        using var _ = inference_mode();
        using var actual = Run(model, null);
        output.WriteLine($"unmasked: max |diff| {TensorAssert.Close(actual, E("tf.out_nomask"), Tolerance, "unmasked forward"):G3}");
    }

    [Fact]
    public void AFloatMaskIsAddedToTheLogitsAsDiffusersPassesIt()
    {
        // diffusers' pipelines build the mask in the embeddings' float dtype, which scaled_dot_product_attention adds to
        // the logits: masked text tokens lose weight (e^-1 relative) but are not removed. An all-ones float mask adds 1
        // to every logit, which softmax ignores; an all-true bool mask masks nothing.
        using var model = Load();
        using var _ = inference_mode();
        using var masked = Run(model, E("tf.attention_mask"));
        using var unmasked = Run(model, null);
        Assert.True(TensorAssert.MaxAbsDiff(masked[0], unmasked[0]) > 1e-3);
        Assert.True(TensorAssert.MaxAbsDiff(masked[1], unmasked[1]) < 1e-5); // sample 1 keeps every token
        using var allTrue = Run(model, ones(2, 32, dtype: ScalarType.Bool));
        Assert.True(TensorAssert.MaxAbsDiff(allTrue, unmasked) < 1e-6);
        // A bool mask that drops the same text tokens removes them from the keys: another output than the float one.
        using var boolMask = Run(model, E("tf.attention_mask").to(ScalarType.Bool));
        Assert.True(TensorAssert.MaxAbsDiff(boolMask[0], masked[0]) > 1e-3);
    }

    /// <summary>
    /// Parameter and state-dict tensor counts of diffusers' ChromaTransformer2DModel at full size (the constructor defaults:
    /// Chroma1-HD / Chroma1-Base, 19 + 38 blocks of width 3072, approximator 64 → 5120 × 5 → 3072), as diffusers 0.36.0
    /// built it in the reference environment with every parameter on meta (fixture meta.json, written by chroma.py).
    /// </summary>
    [Fact]
    public void FullSizeModelHasDiffusersParameterCounts()
    {
        using var meta = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/chroma/meta.json")));
        var fullSize = meta.RootElement.GetProperty("full_size");
        long parameters = fullSize.GetProperty("parameters").GetInt64();
        int tensors = fullSize.GetProperty("tensors").GetInt32();
        Assert.Equal(8_899_983_424L, parameters); // Chroma's "8.9B"
        using var model = new ChromaTransformer2DModel(new ChromaTransformer2DModelConfig(), new Device(DeviceType.META));
        var sd = model.state_dict();
        long elements = sd.Values.Sum(t => t.numel());
        output.WriteLine($"Chroma1-HD: {elements:N0} parameters, {sd.Count} tensors");
        Assert.Equal(parameters, elements);
        Assert.Equal(tensors, sd.Count);
        Assert.Equal(parameters, model.parameters().Sum(t => t.numel()));
        Assert.All(model.parameters(), t => Assert.Equal(DeviceType.META, t.device_type));
        foreach (var key in new[]
        {
            "x_embedder.weight", "context_embedder.bias", "distilled_guidance_layer.in_proj.weight", "distilled_guidance_layer.layers.4.linear_1.weight",
            "distilled_guidance_layer.layers.0.linear_2.bias", "distilled_guidance_layer.norms.4.weight", "distilled_guidance_layer.out_proj.bias",
            "transformer_blocks.18.attn.to_q.weight", "transformer_blocks.0.attn.norm_added_k.weight", "transformer_blocks.0.attn.to_add_out.weight",
            "transformer_blocks.0.ff.net.0.proj.weight", "transformer_blocks.0.ff_context.net.2.bias", "single_transformer_blocks.37.proj_out.weight",
            "single_transformer_blocks.0.proj_mlp.bias", "single_transformer_blocks.0.attn.norm_k.weight", "proj_out.bias",
        })
            Assert.True(sd.ContainsKey(key), key);
        Assert.DoesNotContain(sd.Keys, k => k.Contains("norm1") || k.StartsWith("norm_out", StringComparison.Ordinal) || k.Contains(".norm.linear")
            || k.StartsWith("time_text_embed", StringComparison.Ordinal));
        Assert.Equal([5120L, 64L], sd["distilled_guidance_layer.in_proj.weight"].shape);
        Assert.Equal([3072L, 5120L], sd["distilled_guidance_layer.out_proj.weight"].shape);
    }

    [Fact]
    public void LoadingIsStrictAndTheRegistryKnowsTheClass()
    {
        string source = Fixtures.Path(Folder);
        using (var meta = ModelRegistry.Build("transformer", "ChromaTransformer2DModel", source, new Device(DeviceType.META)))
        using (var model = Load())
            Assert.Equal(model.state_dict().Keys.Order(), meta.state_dict().Keys.Order());
        string dir = Directory.CreateTempSubdirectory("chromat").FullName;
        try
        {
            File.Copy(Path.Combine(source, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            // One approximator layer fewer: its weights are then unexpected.
            File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(source, "config.json")).Replace("\"approximator_layers\": 2", "\"approximator_layers\": 1"));
            var e = Assert.Throws<WeightLoadException>(() => ChromaTransformer2DModel.FromPretrained(dir));
            Assert.Contains("distilled_guidance_layer.norms.1.weight", e.Unexpected);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void InvalidInputsFailBeforeCompute()
    {
        using var model = Load();
        using var _ = inference_mode();
        Tensor h = E("tf.hidden_states"), text = E("tf.encoder_hidden_states"), t = E("tf.timestep"), img = E("tf.img_ids"), txt = E("tf.txt_ids");
        Tensor m = E("tf.attention_mask");
        Assert.Contains("hidden_states", Assert.Throws<ArgumentException>(() => model.forward(randn(2, 20, 63), text, t, img, txt)).Message);
        Assert.Contains("encoder_hidden_states", Assert.Throws<ArgumentException>(() => model.forward(h, randn(2, 12, 95), t, img, txt)).Message);
        Assert.Contains("timestep", Assert.Throws<ArgumentException>(() => model.forward(h, text, tensor(new float[] { 1, 2, 3 }), img, txt)).Message);
        Assert.Contains("img_ids", Assert.Throws<ArgumentException>(() => model.forward(h, text, t, img.narrow(0, 0, 19), txt)).Message);
        Assert.Contains("txt_ids", Assert.Throws<ArgumentException>(() => model.forward(h, text, t, img, txt.narrow(0, 0, 11))).Message);
        Assert.Contains("S_txt + S_img", Assert.Throws<ArgumentException>(() => model.forward(h, text, t, img, txt, m.narrow(1, 0, 12))).Message);
        Assert.Contains("bool", Assert.Throws<ArgumentException>(() => model.forward(h, text, t, img, txt, m.to(ScalarType.Int64))).Message);
    }

    [Fact]
    public void InvalidConfigsAreRefused()
    {
        var tiny = ConfigJson.Read<ChromaTransformer2DModelConfig>(Fixtures.Path(Folder + "/config.json"));
        Assert.Contains("approximator_num_channels", Assert.Throws<ArgumentException>(() => (tiny with { ApproximatorNumChannels = 12 }).Validate()).Message);
        Assert.Contains("axes_dims_rope", Assert.Throws<ArgumentException>(() => (tiny with { AxesDimsRope = [4, 6, 8] }).Validate()).Message);
        Assert.Contains("num_layers", Assert.Throws<ArgumentException>(() => (tiny with { NumLayers = -1 }).Validate()).Message);
        Assert.Equal(32, tiny.ModulationCount); // 3 x 2 single + 12 x 2 double + 2
    }

    // Not a parity bound (no diffusers fixture in half precision): a sanity bound on the random tiny model, with the
    // pipelines' float mask (converted to the attention's dtype, as diffusers' pipelines build it in that dtype). The
    // timesteps (1.0, 0.25) stay exact through diffusers' cast to the model dtype and ×1000 (the fixture's 0.3125 would
    // become 312 in bfloat16, another input).
    [Theory]
    [InlineData(ScalarType.BFloat16, 5e-2)]
    [InlineData(ScalarType.Float16, 5e-3)]
    public void HalfPrecisionStaysCloseToFloat32(ScalarType dtype, double maxRelativeL2)
    {
        using var model = Load();
        using var _ = inference_mode();
        using var timestep = tensor(new float[] { 1.0f, 0.25f });
        using var reference = model.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), timestep, E("tf.img_ids"), E("tf.txt_ids"),
            E("tf.attention_mask"));
        model.to(dtype);
        using var half = model.forward(E("tf.hidden_states").to(dtype), E("tf.encoder_hidden_states").to(dtype), timestep, E("tf.img_ids"),
            E("tf.txt_ids"), E("tf.attention_mask").to(dtype));
        Assert.Equal(dtype, half.dtype);
        using var diff = (half.to(ScalarType.Float64) - reference.to(ScalarType.Float64)).norm();
        using var norm = reference.to(ScalarType.Float64).norm();
        double rel = diff.item<double>() / norm.item<double>();
        output.WriteLine($"{dtype}: relative L2 vs float32 = {rel:G3}");
        Assert.True(rel < maxRelativeL2, $"{dtype}: relative L2 {rel:G3}");
    }

    [Fact]
    public void TheApproximatorsNormIsTorchsRmsNorm()
    {
        // torch.nn.RMSNorm(dim) (eps None): float32's epsilon, a 16-bit input computed in float32 with the weight, cast back;
        // diffusers' RMSNorm casts to the weight's type before scaling instead.
        using var _ = inference_mode();
        using var norm = DiffusersSharp.Models.Layers.RMSNorm.Torch(48, dtype: ScalarType.BFloat16);
        using var x = (randn(3, 48, generator: new TorchSharp.torch.Generator(3)) * 1e-3).to(ScalarType.BFloat16);
        using var y = norm.forward(x);
        using var x32 = x.to(ScalarType.Float32);
        using var expected = (x32 * (x32.pow(2).mean([-1L], keepdim: true) + Math.Pow(2, -23)).rsqrt()).to(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        Assert.Equal(0, TensorAssert.MaxAbsDiff(y, expected));
    }

    [Fact]
    public void ForwardLeavesNoTensorsBehind()
    {
        using var model = Load();
        using var _ = inference_mode();
        using (var warm = Run(model, E("tf.attention_mask"))) { }
        long before = LiveTensors.Count();
        using (var y = Run(model, E("tf.attention_mask"))) { }
        Assert.Equal(before, LiveTensors.Count());
    }
}
