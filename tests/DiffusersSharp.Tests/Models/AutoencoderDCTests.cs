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
/// AutoencoderDC (Sana's DC-AE) against diffusers v0.39.0's own outputs (local-diffusers/sana-dcae, written by
/// tools/reference/sana_dcae.py): a tiny model in the structure of dc-ae-f32c32-sana-1.0 ("sana": strided-conv
/// downsampling, interpolating upsampling, RMSNorm / SiLU, both shortcuts, one multiscale kernel) and one with the other
/// options ("options": first levels without layers so conv_in / conv_out resample, pixel unshuffle / shuffle,
/// BatchNorm and relu / gelu decoder levels, a BatchNorm attention, kernels (3, 5) and none, shortcuts off). The 16 x 24
/// images and 2 x 3 latents take the quadratic attention at the last level (6 positions, attention_head_dim 8) and the
/// linear one elsewhere; the 32 x 48 images and 4 x 6 latents take the linear one everywhere.
/// </summary>
public class AutoencoderDCTests(ITestOutputHelper output)
{
    private static string Folder(string model) => Fixtures.Path($"local-diffusers/sana-dcae/{model}");

    private static Tensor E(string key)
    {
        using var file = SafetensorsFile.Open(Fixtures.Path("local-diffusers/sana-dcae/expected.safetensors"));
        return file.Read(key).clone();
    }

    // Float32 (torch 1.13's CPU kernels against libtorch 2.10's). Measured max |diff|: encode 1.4e-6 .. 3.7e-6 on latents
    // up to 5.3, decode 6.6e-7 .. 1.4e-6 and forward 1.4e-6 on images up to 1.15; the tests print theirs. TensorAssert
    // scales a bound by max(1, max |expected|): encode 2e-6 (6.2e-6 .. 1.06e-5), decode 5e-6 (5.1e-6 .. 5.7e-6), about
    // three to four times the measured.
    private const double EncodeTolerance = 2e-6;
    private const double DecodeTolerance = 5e-6;

    [Theory]
    [InlineData("sana", "x16")]
    [InlineData("sana", "x32")]
    [InlineData("options", "x16")]
    [InlineData("options", "x32")]
    public void EncodeMatchesDiffusers(string model, string input)
    {
        using var vae = AutoencoderDC.FromPretrained(Folder(model));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var latent = vae.Encode(E($"{model}.{input}"));
        double err = TensorAssert.Close(latent, E($"{model}.{input}.latent"), EncodeTolerance, "latent");
        output.WriteLine($"{model} encode {input} -> {string.Join("x", latent.shape)}: max |diff| {err:G3}");
    }

    [Theory]
    [InlineData("sana", "z2")]
    [InlineData("sana", "z4")]
    [InlineData("options", "z2")]
    [InlineData("options", "z4")]
    public void DecodeMatchesDiffusers(string model, string input)
    {
        using var vae = AutoencoderDC.FromPretrained(Folder(model));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var sample = vae.Decode(E($"{model}.{input}"));
        double err = TensorAssert.Close(sample, E($"{model}.{input}.sample"), DecodeTolerance, "sample");
        output.WriteLine($"{model} decode {input} -> {string.Join("x", sample.shape)}: max |diff| {err:G3}");
    }

    /// <summary>diffusers' forward: decode(encode(x)).</summary>
    [Fact]
    public void ForwardMatchesDiffusers()
    {
        using var vae = AutoencoderDC.FromPretrained(Folder("sana"));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var sample = vae.forward(E("sana.x16"));
        double err = TensorAssert.Close(sample, E("sana.x16.forward"), DecodeTolerance, "forward");
        output.WriteLine($"sana forward x16 -> {string.Join("x", sample.shape)}: max |diff| {err:G3}");
    }

    /// <summary>
    /// A bfloat16 load runs in bfloat16 (the linear attention in float32, RMSNorm normalising in float32) and stays as
    /// close to diffusers' float32 outputs as diffusers' own bfloat16 run of the same inputs (the fixture's ".bf16.").
    /// </summary>
    [Theory]
    [InlineData("sana")]
    [InlineData("options")]
    public void BFloat16IsAsCloseToFloat32AsDiffusersBFloat16(string model)
    {
        using var vae = AutoencoderDC.FromPretrained(Folder(model), ScalarType.BFloat16);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        foreach (var (input, what) in new[] { ("x16", "latent"), ("x32", "latent"), ("z2", "sample"), ("z4", "sample") })
        {
            var x = E($"{model}.{input}").to(ScalarType.BFloat16);
            var actual = what == "latent" ? vae.Encode(x) : vae.Decode(x);
            Assert.Equal(ScalarType.BFloat16, actual.dtype);
            var expected = E($"{model}.{input}.{what}");
            double ours = TensorAssert.RelativeL2(actual, expected), theirs = TensorAssert.RelativeL2(E($"{model}.{input}.bf16.{what}"), expected);
            output.WriteLine($"{model} bf16 {input}: relative L2 vs diffusers' float32 = {ours:G3} (diffusers' bf16: {theirs:G3})");
            Assert.True(ours <= 1.5 * theirs, $"{model} {input}: relative L2 {ours:G3} vs diffusers' bf16 {theirs:G3}");
        }
    }

    [Fact]
    public void ConfigIsReadInBothForms()
    {
        using var sana = AutoencoderDC.FromPretrained(Folder("sana"));
        Assert.Equal(8, sana.VaeScaleFactor);
        Assert.Equal(0.41407, sana.ScalingFactor);
        Assert.Equal(["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"], sana.Config.EncoderBlockTypeList);
        Assert.Equal(["rms_norm", "rms_norm", "rms_norm", "rms_norm"], sana.Config.DecoderNormTypeList);
        Assert.Equal("silu,silu,silu,silu", string.Join(",", sana.Config.DecoderActFnList));
        Assert.Equal("Conv", sana.Config.DownsampleBlockType);
        var state = sana.state_dict();
        // Strided convs and interpolating upsampling keep the level's width; the RMSNorms have a bias.
        Assert.Equal([16L, 8, 3, 3], state["encoder.down_blocks.0.1.conv.weight"].shape);
        Assert.Equal([16L, 32, 3, 3], state["decoder.up_blocks.1.0.conv.weight"].shape);
        Assert.Equal([32L], state["encoder.down_blocks.2.0.attn.norm_out.bias"].shape);
        Assert.Equal([96L, 1, 5, 5], state["encoder.down_blocks.2.0.attn.to_qkv_multiscale.0.proj_in.weight"].shape);
        Assert.Equal([96L, 8, 1, 1], state["encoder.down_blocks.2.0.attn.to_qkv_multiscale.0.proj_out.weight"].shape);

        using var options = AutoencoderDC.FromPretrained(Folder("options"));
        Assert.Equal(["batch_norm", "rms_norm", "batch_norm", "batch_norm"], options.Config.DecoderNormTypeList);
        Assert.Equal("relu,relu,gelu,silu", string.Join(",", options.Config.DecoderActFnList));
        state = options.state_dict();
        // conv_in / conv_out are resampling blocks (pixel unshuffle to 16 = 4 x 4 channels, pixel shuffle from 12 = 4 x 3).
        Assert.Equal([4L, 3, 3, 3], state["encoder.conv_in.conv.weight"].shape);
        Assert.Equal([12L, 16, 3, 3], state["decoder.conv_out.conv.weight"].shape);
        Assert.Equal([64L, 192], state["decoder.up_blocks.3.0.attn.to_out.weight"].shape); // 8 heads x 8, three scales
        Assert.Equal(ScalarType.Int64, state["decoder.up_blocks.3.0.attn.norm_out.num_batches_tracked"].dtype);
        Assert.Equal(321L, state["decoder.up_blocks.2.1.norm.num_batches_tracked"].item<long>());
        Assert.DoesNotContain(state.Keys, k => k.StartsWith("encoder.down_blocks.0.", StringComparison.Ordinal));

        // A single block type, norm and activation stands for every level; an activation may be any case.
        var single = ConfigJson.Parse<AutoencoderDCConfig>("""{"encoder_block_types": "EfficientViTBlock", "decoder_act_fns": ["ReLU", null, "Mish", "SiLU", "gelu", "swish"]}""");
        Assert.Equal(Enumerable.Repeat("EfficientViTBlock", 6), single.EncoderBlockTypeList);
        Assert.Equal("relu,<none>,mish,silu,gelu,swish", string.Join(",", single.DecoderActFnList.Select(a => a ?? "<none>")));
        single.Validate();
    }

    [Fact]
    public void DefaultConfigIsTheDiffusersConstructorDefault()
    {
        var config = ConfigJson.Parse<AutoencoderDCConfig>("{}");
        Assert.Equal((3, 32, 32), (config.InChannels, config.LatentChannels, config.AttentionHeadDim));
        Assert.Equal([128, 256, 512, 512, 1024, 1024], config.EncoderBlockOutChannels);
        Assert.Equal([128, 256, 512, 512, 1024, 1024], config.DecoderBlockOutChannels);
        Assert.Equal([2, 2, 2, 3, 3, 3], config.EncoderLayersPerBlock);
        Assert.Equal([3, 3, 3, 3, 3, 3], config.DecoderLayersPerBlock);
        Assert.Equal([[], [], [], [5], [5], [5]], config.EncoderQkvMultiscales);
        Assert.Equal([[], [], [], [5], [5], [5]], config.DecoderQkvMultiscales);
        Assert.Equal(Enumerable.Repeat("ResBlock", 6), config.EncoderBlockTypeList);
        Assert.Equal(("pixel_shuffle", "pixel_unshuffle", "relu"), (config.UpsampleBlockType, config.DownsampleBlockType, config.DecoderConvActFn));
        Assert.Equal(Enumerable.Repeat("rms_norm", 6), config.DecoderNormTypeList);
        Assert.Equal("silu,silu,silu,silu,silu,silu", string.Join(",", config.DecoderActFnList));
        Assert.True(config.EncoderOutShortcut && config.DecoderInShortcut);
        Assert.Equal(1.0, config.ScalingFactor);
        Assert.Equal(32, config.SpatialCompressionRatio);
    }

    /// <summary>The full-size dc-ae-f32c32-sana-1.0 (the conversion script's config) has diffusers' state-dict keys, counts and shapes (counts.json).</summary>
    [Fact]
    public void FullSizeSanaModelHasDiffusersCounts()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/sana-dcae/counts.json")))!;
        var config = ConfigJson.Parse<AutoencoderDCConfig>(counts["config"]!.ToJsonString());
        using var vae = new AutoencoderDC(config, META);
        var state = vae.state_dict();
        Assert.Equal(counts["keys"]!.GetValue<int>(), state.Count);
        Assert.Equal(counts["elements"]!.GetValue<long>(), state.Values.Sum(t => t.numel()));
        foreach (var (key, shape) in counts["shapes"]!.AsObject())
            Assert.Equal(shape!.AsArray().Select(d => d!.GetValue<long>()).ToArray(), state[key].shape);
        Assert.Equal(32, vae.VaeScaleFactor);
        output.WriteLine($"dc-ae-f32c32-sana-1.0: {state.Count} keys, {state.Values.Sum(t => t.numel()):N0} elements");
        Assert.Contains("AutoencoderDC", ModelRegistry.KnownClasses);
        using var built = ModelRegistry.Build("vae", "AutoencoderDC", Folder("options"), META);
        Assert.IsType<AutoencoderDC>(built);
    }

    [Fact]
    public void LoadingIsStrict()
    {
        string dir = Directory.CreateTempSubdirectory("sana-dcae-strict").FullName;
        try
        {
            File.Copy(Path.Combine(Folder("options"), "config.json"), Path.Combine(dir, "config.json"));
            Dictionary<string, Tensor> weights;
            using (var file = SafetensorsFile.Open(Path.Combine(Folder("options"), "diffusion_pytorch_model.safetensors")))
                weights = file.ReadAll();
            string weightsPath = Path.Combine(dir, "diffusion_pytorch_model.safetensors");

            // An RMSNorm's bias, a BatchNorm's statistics (the counter included), a multiscale projection.
            foreach (var key in new[] { "decoder.norm_out.bias", "decoder.up_blocks.2.1.norm.running_var", "decoder.up_blocks.3.0.attn.norm_out.num_batches_tracked",
                         "encoder.down_blocks.3.0.attn.to_qkv_multiscale.1.proj_out.weight", "decoder.up_blocks.3.1.conv_out.norm.bias" })
            {
                SafetensorsWriter.Save(weightsPath, weights.Where(kv => kv.Key != key).ToDictionary(kv => kv.Key, kv => kv.Value));
                var missing = Assert.Throws<WeightLoadException>(() => AutoencoderDC.FromPretrained(dir));
                Assert.Contains(key, missing.Message);
            }

            // An unexpected key: a multiscale branch this config does not have.
            SafetensorsWriter.Save(weightsPath, new Dictionary<string, Tensor>(weights) { ["encoder.down_blocks.2.0.attn.to_qkv_multiscale.0.proj_in.weight"] = ones(96, 1, 5, 5) });
            var unexpected = Assert.Throws<WeightLoadException>(() => AutoencoderDC.FromPretrained(dir));
            Assert.Contains("to_qkv_multiscale.0", unexpected.Message);

            // The encoder's widths for the decoder do not fit the weights.
            SafetensorsWriter.Save(weightsPath, weights);
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder("options"), "config.json")))!.AsObject();
            json["decoder_block_out_channels"] = new JsonArray(8, 16, 32, 32);
            File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
            Assert.Throws<WeightLoadException>(() => AutoencoderDC.FromPretrained(dir));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void BadConfigsGiveClearErrors()
    {
        var sana = ConfigJson.Read<AutoencoderDCConfig>(Path.Combine(Folder("sana"), "config.json"));
        void Rejects(AutoencoderDCConfig config, string text) =>
            Assert.Contains(text, Assert.Throws<ArgumentException>(() => new AutoencoderDC(config, META)).Message);
        Rejects(sana with { EncoderLayersPerBlock = [1, 1, 1] }, "encoder_layers_per_block has 3 entries");
        Rejects(sana with { DecoderQkvMultiscales = [[], [5]] }, "decoder_qkv_multiscales has 2 entries");
        Rejects(sana with { DecoderQkvMultiscales = [[], [], [4], [5]] }, "odd");
        Rejects(sana with { EncoderBlockTypes = OneOrMany<string>.Many("ResBlock", "ResBlock", "EfficientViTBlock") }, "encoder_block_types has 3 entries");
        Rejects(sana with { DecoderBlockTypes = "AttnBlock" }, "'AttnBlock' is not supported");
        Rejects(sana with { DecoderNormTypes = "layer_norm" }, "decoder_norm_types[0] 'layer_norm'");
        Rejects(sana with { DecoderActFns = "relu6" }, "decoder_act_fns[0] 'relu6'");
        Rejects(sana with { DecoderConvActFn = "tanh" }, "decoder_conv_act_fn 'tanh'");
        Rejects(sana with { LatentChannels = 5 }, "encoder_out_shortcut");
        Rejects(sana with { LatentChannels = 5, EncoderOutShortcut = false }, "decoder_in_shortcut");
        Rejects(sana with { AttentionHeadDim = 64 }, "fewer than attention_head_dim 64");
        Rejects(sana with { EncoderLayersPerBlock = [1, 0, 2, 1] }, "may be 0 on the first level only");
        // Channel ratios the shortcuts cannot map: 16 -> 24 channels averages 64 in groups of 2 (32, not 24).
        Rejects(sana with { EncoderBlockOutChannels = [8, 16, 24, 24], EncoderOutShortcut = false }, "DCDownBlock2d");
        Rejects(sana with { DecoderBlockOutChannels = [8, 16, 24, 32], DecoderInShortcut = true }, "DCUpBlock2d");
        // conv_in pixel-unshuffles to 18 channels: a conv to 18 / 4 cannot.
        Rejects(sana with { DownsampleBlockType = "pixel_unshuffle", EncoderBlockOutChannels = [8, 18, 32, 32], EncoderLayersPerBlock = [0, 1, 1, 1] }, "divisible by 4");
    }

    [Fact]
    public void BadInputsGiveClearErrors()
    {
        using var vae = AutoencoderDC.FromPretrained(Folder("sana"));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        Assert.Contains("multiples of the VAE scale factor 8", Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 16, 20]))).Message);
        Assert.Contains("3 channels", Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 4, 16, 16]))).Message);
        Assert.Contains("4 channels", Assert.Throws<ArgumentException>(() => vae.Decode(zeros([1, 32, 2, 3]))).Message);
        Assert.Contains("NCHW", Assert.Throws<ArgumentException>(() => vae.Decode(zeros([4, 2, 3]))).Message);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => vae.Decode(zeros([0, 4, 2, 3]))).Message);
        Assert.Contains("Float64", Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 16, 24], ScalarType.Float64))).Message);
        Assert.Contains("BFloat16", Assert.Throws<ArgumentException>(() => vae.Decode(zeros([1, 4, 2, 3], ScalarType.BFloat16))).Message);
    }

    /// <summary>diffusers' get_activation names the DC-AE's configs may use beyond silu / gelu: relu and mish (x · tanh(softplus(x))).</summary>
    [Fact]
    public void ReluAndMishAreDiffusersActivations()
    {
        using var scope = NewDisposeScope();
        var x = linspace(-6, 6, 97, dtype: ScalarType.Float64);
        TensorAssert.Close(DiffusersSharp.Models.Layers.DiffusersActivations.Apply("relu", x), x.clamp_min(0), 0, "relu");
        TensorAssert.Close(DiffusersSharp.Models.Layers.DiffusersActivations.Apply("mish", x), x * nn.functional.softplus(x).tanh(), 1e-15, "mish");
    }

    /// <summary>
    /// The attention alone (the sana model's encoder.down_blocks.2.0.attn weights, no residual, which would swamp its
    /// rounding) against diffusers' SanaMultiscaleLinearAttention: float32, and bfloat16 against diffusers' own bfloat16
    /// run, where the linear path computes in float32 and the quadratic one normalises in float32.
    /// </summary>
    [Theory]
    [InlineData("linear")]
    [InlineData("quadratic")]
    public void AttentionMatchesDiffusersInBothTypes(string path)
    {
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        Dictionary<string, Tensor> weights;
        using (var file = SafetensorsFile.Open(Path.Combine(Folder("sana"), "diffusion_pytorch_model.safetensors")))
            weights = file.ReadAll();
        const string prefix = "encoder.down_blocks.2.0.attn.";
        var x = E($"attn.{path}.x");
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var attn = new DiffusersSharp.Models.Autoencoders.DC.SanaMultiscaleLinearAttention(32, 32, attentionHeadDim: 8,
                normType: "rms_norm", kernelSizes: [5], residualConnection: false, dtype: dtype);
            var state = attn.state_dict();
            Assert.Equal(weights.Keys.Count(k => k.StartsWith(prefix, StringComparison.Ordinal)), state.Count);
            foreach (var (key, value) in state) value.copy_(weights[prefix + key]);
            var actual = attn.forward(x.to(dtype));
            Assert.Equal(dtype, actual.dtype);
            if (dtype == ScalarType.Float32)
            {
                double err = TensorAssert.Close(actual, E($"attn.{path}.out"), 1e-6, "attention");
                output.WriteLine($"{path} float32: max |diff| {err:G3}");
            }
            else
            {
                double toTheirs = TensorAssert.RelativeL2(actual, E($"attn.{path}.bf16.out"));
                double toFloat32 = TensorAssert.RelativeL2(actual, E($"attn.{path}.out"));
                double gap = TensorAssert.RelativeL2(E($"attn.{path}.bf16.out"), E($"attn.{path}.out"));
                output.WriteLine($"{path} bf16: relative L2 vs diffusers' bf16 {toTheirs:G3}, vs float32 {toFloat32:G3} (diffusers' bf16 vs float32: {gap:G3})");
                if (path == "linear")
                {
                    // Measured: bit-identical to diffusers' bfloat16 run (the products in float32, one rounding at the end);
                    // the products left in bfloat16 are 0.0050 away (gap 0.0062).
                    Assert.True(toTheirs <= 0.1 * gap, $"linear: relative L2 {toTheirs:G3} vs diffusers' bf16, whose own gap to float32 is {gap:G3}");
                }
                else
                {
                    // torch 1.13's bfloat16 bmm of such small matrices does not accumulate in float32 as libtorch 2.10's
                    // does (57 of 144 products differ from float32-accumulate-then-round in a probe), so diffusers' bf16
                    // run is the less exact here: ours must be at least as close to float32 (measured 0.0077 vs 0.0088).
                    Assert.True(toFloat32 <= gap, $"quadratic: relative L2 to float32 {toFloat32:G3} vs diffusers' bf16 {gap:G3}");
                }
            }
        }
    }
}
