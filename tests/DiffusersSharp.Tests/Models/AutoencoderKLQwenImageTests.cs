using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// AutoencoderKLQwenImage against diffusers v0.39.0's own outputs (local-diffusers/qwenimage-vae, written by
/// tools/reference/qwenimage_vae.py): two tiny models, images (T = 1) and 5-frame videos through the frame cache.
/// </summary>
public class AutoencoderKLQwenImageTests(ITestOutputHelper output)
{
    private static string Folder(string model) => Fixtures.Path($"local-diffusers/qwenimage-vae/{model}");

    private static Tensor E(string key)
    {
        using var file = SafetensorsFile.Open(Fixtures.Path("local-diffusers/qwenimage-vae/expected.safetensors"));
        return file.Read(key).clone();
    }

    [Theory]
    [InlineData("small", "image")]
    [InlineData("small", "video")]
    [InlineData("wan", "image")]
    [InlineData("wan", "video")]
    public void EncodeMatchesDiffusers(string model, string input)
    {
        using var vae = AutoencoderKLQwenImage.FromPretrained(Folder(model));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        string p = $"{model}.{input}";
        using var posterior = vae.Encode(E($"{p}.x"));
        double parametersErr = TensorAssert.Close(posterior.Parameters, E($"{p}.parameters"), 2e-5, "parameters");
        double meanErr = TensorAssert.Close(posterior.Mean, E($"{p}.mean"), 2e-5, "mean");
        double logvarErr = TensorAssert.Close(posterior.LogVar, E($"{p}.logvar"), 2e-5, "logvar");
        double stdErr = TensorAssert.Close(posterior.Std, E($"{p}.std"), 2e-5, "std");
        output.WriteLine($"{p} encode {string.Join("x", posterior.Parameters.shape)}: max |diff| parameters {parametersErr:G3}, " +
                         $"mean {meanErr:G3}, logvar {logvarErr:G3}, std {stdErr:G3}");
    }

    [Theory]
    [InlineData("small", "image")]
    [InlineData("small", "video")]
    [InlineData("wan", "image")]
    [InlineData("wan", "video")]
    public void DecodeMatchesDiffusers(string model, string input)
    {
        using var vae = AutoencoderKLQwenImage.FromPretrained(Folder(model));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        string p = $"{model}.{input}";
        var decoded = vae.Decode(E($"{p}.z"));
        double err = TensorAssert.Close(decoded, E($"{p}.decoded"), 2e-5, "decoded");
        output.WriteLine($"{p} decode {string.Join("x", decoded.shape)}: max |diff| = {err:G3}");
    }

    [Fact]
    public void ConfigIsReadAndScaleFactorIsDiffusersPipelines()
    {
        using var small = AutoencoderKLQwenImage.FromPretrained(Folder("small"));
        Assert.Equal(8, small.Config.BaseDim);
        Assert.Equal(4, small.Config.ZDim);
        Assert.Equal([false, true], small.Config.TemperalDownsample);
        Assert.Equal(4, small.VaeScaleFactor);
        using var wan = AutoencoderKLQwenImage.FromPretrained(Folder("wan"));
        Assert.Equal(8, wan.VaeScaleFactor);
        Assert.Equal(16, wan.Config.LatentsMean.Length);
        Assert.Equal(1.9160, wan.Config.LatentsStd[^1]);
    }

    [Fact]
    public void DefaultConfigIsTheDiffusersConstructorDefault()
    {
        var config = ConfigJson.Parse<AutoencoderKLQwenImageConfig>("{}");
        Assert.Equal(96, config.BaseDim);
        Assert.Equal(16, config.ZDim);
        Assert.Equal([1, 2, 4, 4], config.DimMult);
        Assert.Equal(2, config.NumResBlocks);
        Assert.Empty(config.AttnScales);
        Assert.Equal([false, true, true], config.TemperalDownsample);
        Assert.Equal(0.0, config.Dropout);
        Assert.Equal(3, config.InputChannels);
        Assert.Equal(-0.7571, config.LatentsMean[0]);
        Assert.Equal(2.8184, config.LatentsStd[0]);
        Assert.Equal(16, config.LatentsMean.Length);
        Assert.Equal(16, config.LatentsStd.Length);
    }

    /// <summary>The full-size model (Qwen-Image's VAE config) has diffusers' state-dict keys, counts and shapes (counts.json).</summary>
    [Fact]
    public void FullSizeModelHasDiffusersCounts()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/qwenimage-vae/counts.json")))!;
        using var vae = new AutoencoderKLQwenImage(new AutoencoderKLQwenImageConfig(), META);
        var state = vae.state_dict();
        Assert.Equal(counts["keys"]!.GetValue<int>(), state.Count);
        Assert.Equal(counts["elements"]!.GetValue<long>(), state.Values.Sum(t => t.numel()));
        foreach (var (key, shape) in counts["shapes"]!.AsObject())
            Assert.Equal(shape!.AsArray().Select(d => d!.GetValue<long>()).ToArray(), state[key].shape);
        Assert.Equal(8, vae.VaeScaleFactor);
    }

    [Fact]
    public void LoadingIsStrict()
    {
        string dir = Directory.CreateTempSubdirectory("qwenimage-vae-strict").FullName;
        try
        {
            File.Copy(Path.Combine(Folder("small"), "config.json"), Path.Combine(dir, "config.json"));
            Dictionary<string, Tensor> weights;
            using (var file = SafetensorsFile.Open(Path.Combine(Folder("small"), "diffusion_pytorch_model.safetensors")))
                weights = file.ReadAll();
            string weightsPath = Path.Combine(dir, "diffusion_pytorch_model.safetensors");

            // A missing key.
            SafetensorsWriter.Save(weightsPath, weights.Where(kv => kv.Key != "decoder.up_blocks.0.upsamplers.0.time_conv.weight")
                .ToDictionary(kv => kv.Key, kv => kv.Value));
            var missing = Assert.Throws<WeightLoadException>(() => AutoencoderKLQwenImage.FromPretrained(dir));
            Assert.Contains("decoder.up_blocks.0.upsamplers.0.time_conv.weight", missing.Message);

            // An unexpected key.
            var extra = new Dictionary<string, Tensor>(weights) { ["encoder.extra.gamma"] = ones(4) };
            SafetensorsWriter.Save(weightsPath, extra);
            var unexpected = Assert.Throws<WeightLoadException>(() => AutoencoderKLQwenImage.FromPretrained(dir));
            Assert.Contains("encoder.extra.gamma", unexpected.Message);

            // A gamma of the wrong shape ([C] instead of [C, 1, 1, 1]).
            var reshaped = new Dictionary<string, Tensor>(weights) { ["encoder.norm_out.gamma"] = weights["encoder.norm_out.gamma"].flatten() };
            SafetensorsWriter.Save(weightsPath, reshaped);
            Assert.Throws<WeightLoadException>(() => AutoencoderKLQwenImage.FromPretrained(dir));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void BadInputsGiveClearErrors()
    {
        using var vae = AutoencoderKLQwenImage.FromPretrained(Folder("small"));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var rank4 = Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 16, 24])));
        Assert.Contains("T = 1", rank4.Message);
        Assert.Contains("channels", Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 4, 1, 16, 24]))).Message);
        Assert.Contains("1 + 4k", Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 3, 16, 24]))).Message);
        Assert.Contains("multiples of the VAE scale factor 4", Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 1, 18, 24]))).Message);
        Assert.Contains("BFloat16", Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 1, 16, 24], ScalarType.BFloat16))).Message);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => vae.Decode(zeros([1, 4, 0, 4, 6]))).Message);
        Assert.Contains("4 channels", Assert.Throws<ArgumentException>(() => vae.Decode(zeros([1, 16, 1, 4, 6]))).Message);
        Assert.Contains("[B, 4, T, H, W]", Assert.Throws<ArgumentException>(() => vae.Decode(zeros([1, 4, 4, 6]))).Message);
        Assert.Throws<ArgumentException>(() => new AutoencoderKLQwenImage(new AutoencoderKLQwenImageConfig { AttnScales = [1.0] }, META));
        Assert.Throws<ArgumentException>(() => new AutoencoderKLQwenImage(new AutoencoderKLQwenImageConfig { TemperalDownsample = [false, true] }, META));
    }

    /// <summary>
    /// bfloat16 runs (RMS norm normalising in float32) stay finite and as close to diffusers' float32 outputs as
    /// diffusers' own bfloat16 run is (the fixture's ".bf16." tensors): bfloat16 rounding through a random-weight VAE
    /// moves the decoded image by about 5% (relative L2) in diffusers too, so the yardstick is diffusers' distance, with
    /// room for different kernels rounding differently (1.5x), not a fixed number.
    /// </summary>
    [Theory]
    [InlineData("image")]
    [InlineData("video")]
    public void BFloat16IsAsCloseToFloat32AsDiffusersBFloat16(string input)
    {
        using var vae = AutoencoderKLQwenImage.FromPretrained(Folder("wan"), ScalarType.BFloat16);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        string p = $"wan.{input}";
        using var posterior = vae.Encode(E($"{p}.x").to(ScalarType.BFloat16));
        var decoded = vae.Decode(E($"{p}.z").to(ScalarType.BFloat16));
        foreach (var (actual, key) in new[] { (posterior.Mean, "mean"), (decoded, "decoded") })
        {
            Assert.Equal(ScalarType.BFloat16, actual.dtype);
            Assert.True(actual.isfinite().all().item<bool>(), $"{key} is not finite");
            var expected = E($"{p}.{key}").to(ScalarType.Float64);
            double ours = TensorAssert.RelativeL2(actual, expected), theirs = TensorAssert.RelativeL2(E($"{p}.bf16.{key}"), expected);
            output.WriteLine($"{p} bf16 {key}: relative L2 vs diffusers' float32 = {ours:G3} (diffusers' bf16: {theirs:G3})");
            Assert.True(ours <= 1.5 * theirs, $"{key}: relative L2 {ours:G3} vs diffusers' bf16 {theirs:G3}");
        }
    }

    /// <summary>
    /// v0.39's QwenImageRMS_norm normalises bfloat16 / float16 inputs in float32 and casts back before scaling: at a
    /// real model's width (384 channels) that differs from normalising in bfloat16 (the norm rounded to bfloat16 first),
    /// which the tiny fixture models are too narrow to show. Expected: F.normalize's formula in float32, written out here,
    /// then PyTorch's `bf16 * float` (float32 arithmetic with the exact scale, as libtorch's out-of-place mul does).
    /// </summary>
    [Fact]
    public void RmsNormNormalisesHalfPrecisionInFloat32()
    {
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        using var norm = new QwenImageRMSNorm(384, images: false, dtype: ScalarType.BFloat16);
        var x = (randn([2, 384, 1, 4, 4], generator: new Generator(7)) * 30).to(ScalarType.BFloat16);
        var actual = norm.forward(x);
        var f = x.to(ScalarType.Float32);
        var normalized = (f / linalg.vector_norm(f, 2, [1L], keepdim: true).clamp_min(1e-12)).to(ScalarType.BFloat16);
        var expected = normalized * Math.Sqrt(384);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(actual, expected));
        // The same in bfloat16 throughout differs, so the check above can tell the two apart.
        var inHalf = x / linalg.vector_norm(x, 2, [1L], keepdim: true).clamp_min(1e-12) * Math.Sqrt(384);
        Assert.True(TensorAssert.MaxAbsDiff(inHalf, expected) > 0);
    }


    [Fact]
    public void IsInTheModelRegistry()
    {
        Assert.Equal(ComponentKind.Model, ModelRegistry.KindOf("vae", "AutoencoderKLQwenImage"));
        using var registered = ModelRegistry.Build("vae", "AutoencoderKLQwenImage", Folder("wan"), META);
        Assert.IsType<AutoencoderKLQwenImage>(registered);
        using var file = SafetensorsFile.Open(Path.Combine(Folder("wan"), "diffusion_pytorch_model.safetensors"));
        Assert.Equal(file.ReadAll().Keys.Order(StringComparer.Ordinal), registered.state_dict().Keys.Order(StringComparer.Ordinal));
    }
}
