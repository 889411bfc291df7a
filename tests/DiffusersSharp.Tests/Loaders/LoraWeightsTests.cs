using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Shipped;
using DiffusersSharp.Tests.Support;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// A diffusers LoRA (tiny-sd3-lora: rank 4 on every attention projection of tiny-sd3's transformer) fused into the
/// weights, against diffusers' images of the t2i case after <c>load_lora_weights</c>, at scale 1 and 0.5.
/// </summary>
public sealed class LoraWeightsTests(ITestOutputHelper output)
{
    internal static readonly string LoraFile = Fixtures.Path("tiny-sd3-lora/lora/pytorch_lora_weights.safetensors");

    [Theory]
    [InlineData("scale1", 1.0)]
    [InlineData("scale05", 0.5)]
    public void FusedLoraGivesDiffusersImage(string name, double scale)
    {
        double err = LoraImageError(name, scale, withT5: true);
        output.WriteLine($"{name}: max |ours - diffusers| = {err:G3} (image in [0, 1])");
        // This case runs every component, T5 included (unlike tiny-sd3's own images, made with T5 dropout on).
        // Measured 3.5e-6 (scale 1) and 3.6e-6 (scale 0.5) against diffusers' run on another CPU.
        Assert.True(err <= 1e-5, $"{name}: {err}");
    }

    [Fact]
    public void TheLoraImageDependsOnT5()
    {
        // What makes the test above a check of T5 too: with T5's rows zeroed the same case lands far from diffusers.
        double err = LoraImageError("scale1", 1.0, withT5: false);
        output.WriteLine($"scale1 without T5: max |ours - diffusers| = {err:G3}");
        Assert.True(err > 0.01, $"{err}");
    }

    private static double LoraImageError(string name, double scale, bool withT5)
    {
        var expected = Fixtures.Expected("tiny-sd3-lora/expected.safetensors")[$"{name}.image"];
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = withT5 });
        using (var lora = LoraWeights.Load(LoraFile))
        {
            Assert.Equal(38 / 2, lora.Layers.Count);
            lora.FuseInto(components.Transformer, scale);
        }
        using var pipe = new StableDiffusion3Pipeline(components);
        using var image = pipe.Generate(new StableDiffusion3Request
        {
            Prompt = "A photo of a group of teddy bears eating pizza on the surface of mars", NegativePrompt = "pepperoni",
            NumInferenceSteps = 4, GuidanceScale = 4.5, Height = 64, Width = 64, Generator = new Generator("cpu").ManualSeed(123456),
            OutputType = OutputType.Numpy,
        });
        return TensorAssert.MaxAbsDiff(image.Tensor!, expected);
    }

    [Fact]
    public void FusingAddsScaledUpTimesDownAndTheNegativeScaleTakesItBack()
    {
        using var transformer = SD3Transformer2DModel.FromPretrained(Path.Combine(Fixtures.TinySd3Model, "transformer"), ScalarType.Float32, CPU);
        using var lora = LoraWeights.Load(LoraFile);
        var linear = (Linear)transformer.named_modules().Single(m => m.name == "transformer_blocks.0.attn.to_add_out").module;
        using var before = linear.weight!.clone();
        var (down, up) = lora.Layers["transformer_blocks.0.attn.to_add_out"];
        lora.FuseInto(transformer, 0.5);
        using var expectedDelta = up.matmul(down) * 0.5;
        using var delta = linear.weight! - before;
        Assert.True(expectedDelta.abs().max().item<float>() > 0.01f);
        // float32 rounding of W + delta (|W + delta| < 1.1 here, ulp 1.2e-7); measured 3.0e-8 for both.
        Assert.True(TensorAssert.MaxAbsDiff(delta, expectedDelta) <= 2.5e-7);
        lora.FuseInto(transformer, -0.5);
        Assert.True(TensorAssert.MaxAbsDiff(linear.weight!, before) <= 2.5e-7);
    }

    [Fact]
    public void ALoraForAnotherModelChangesNothingAndSaysWhy()
    {
        // The shipped model's transformer has the same module names at width 128; the fixture LoRA is for width 32.
        using var transformer = SD3Transformer2DModel.FromPretrained(Path.Combine(ShippedModel.Folder, "transformer"), ScalarType.Float32, CPU);
        using var lora = LoraWeights.Load(LoraFile);
        var weights = transformer.parameters().Select(p => p.clone()).ToList();
        var e = Assert.Throws<ArgumentException>(() => lora.FuseInto(transformer));
        Assert.Contains("transformer_blocks.0.attn", e.Message);
        Assert.All(transformer.parameters().Zip(weights), p => Assert.Equal(0.0, TensorAssert.MaxAbsDiff(p.First, p.Second)));
        foreach (var w in weights) w.Dispose();
    }

    [Fact]
    public void FilesThatAreNotATransformerLoraAreRejected()
    {
        string dir = Directory.CreateTempSubdirectory("lora").FullName;
        try
        {
            void Write(string file, params string[] keys) =>
                SafetensorsWriter.Save(Path.Combine(dir, file), keys.ToDictionary(k => k, _ => zeros(4, 8)));
            Write("te.safetensors", "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
                "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight");
            Write("half.safetensors", "transformer.transformer_blocks.0.attn.to_q.lora_A.weight");
            Write("alpha.safetensors", "transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
                "transformer.transformer_blocks.0.attn.to_q.lora_B.weight", "transformer.transformer_blocks.0.attn.to_q.alpha");
            Assert.Contains("text_encoder.", Assert.Throws<InvalidDataException>(() => LoraWeights.Load(Path.Combine(dir, "te.safetensors"))).Message);
            Assert.Contains("to_q", Assert.Throws<InvalidDataException>(() => LoraWeights.Load(Path.Combine(dir, "half.safetensors"))).Message);
            // Alphas are read now (KohyaLoraTests); this one is [4, 8], not a single number.
            Assert.Contains("alpha", Assert.Throws<InvalidDataException>(() => LoraWeights.Load(Path.Combine(dir, "alpha.safetensors"))).Message);
            // lora_A [4, 8] with lora_B [4, 8]: B must be [out, r].
            Write("shape.safetensors", "transformer.x.lora_A.weight", "transformer.x.lora_B.weight");
            Assert.Contains("[out, r]", Assert.Throws<InvalidDataException>(() => LoraWeights.Load(Path.Combine(dir, "shape.safetensors"))).Message);
            Assert.Throws<FileNotFoundException>(() => LoraWeights.Load(Path.Combine(dir, "missing.safetensors")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}

/// <summary>
/// A whole-pipeline LoRA file (transformer and both CLIP parts, as diffusers' SD3 <c>save_lora_weights</c> can write it)
/// fused through <see cref="StableDiffusion3Components.FuseLora"/>.
/// </summary>
public sealed class PipelineLoraTests : IDisposable
{
    private const string ClipQ = "text_model.encoder.layers.0.self_attn.q_proj";
    private const string TransformerQ = "transformer_blocks.0.attn.to_q";
    private readonly string _dir = Directory.CreateTempSubdirectory("lora").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Write(string name, Dictionary<string, Tensor> tensors)
    {
        string path = Path.Combine(_dir, name);
        SafetensorsWriter.Save(path, tensors);
        return path;
    }

    private static Dictionary<string, Tensor> Pair(string component, string module, int outFeatures, int inFeatures, int seed)
    {
        using var g = new TorchSharp.torch.Generator((ulong)seed);
        return new()
        {
            [$"{component}.{module}.lora_A.weight"] = randn([2, inFeatures], generator: g),
            [$"{component}.{module}.lora_B.weight"] = randn([outFeatures, 2], generator: g),
        };
    }

    private static Tensor Weight(TorchSharp.torch.nn.Module model, string module) =>
        ((Linear)model.named_modules().Single(m => m.name == module).module).weight!;

    /// <summary>
    /// Writes a random rank-2 PEFT pair for each (component, model, module), fuses the file with <paramref name="fuse"/> at
    /// <paramref name="scale"/>, and checks each weight moved by scale · B A. The bound is float32 rounding of W + delta
    /// with |delta| up to 1.7 (ulp 1.2e-7 to 2.4e-7); measured 6e-8 to 1.2e-7.
    /// </summary>
    private void AssertEveryPartFused((string Component, TorchSharp.torch.nn.Module Model, string Module)[] models,
        Func<string, double, int> fuse, double scale, int seed)
    {
        var tensors = models.SelectMany((m, i) =>
        {
            var shape = Weight(m.Model, m.Module).shape;
            return Pair(m.Component, m.Module, (int)shape[0], (int)shape[1], seed + i);
        }).ToDictionary();
        string path = Write($"lora-{seed}.safetensors", tensors);
        var before = models.Select(m => Weight(m.Model, m.Module).clone()).ToArray();
        Assert.Equal(models.Length, fuse(path, scale));
        for (int i = 0; i < models.Length; i++)
        {
            var (component, model, module) = models[i];
            using var expected = tensors[$"{component}.{module}.lora_B.weight"].matmul(tensors[$"{component}.{module}.lora_A.weight"]) * scale;
            using var delta = Weight(model, module) - before[i];
            Assert.True(TensorAssert.MaxAbsDiff(delta, expected) <= 5e-7, $"{component}.{module}");
        }
        foreach (var t in before.Concat(tensors.Values)) t.Dispose();
    }

    [Fact]
    public void EveryPartIsFusedIntoItsModelAtTheScale()
    {
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = false });
        AssertEveryPartFused(
        [
            ("transformer", components.Transformer, TransformerQ), ("text_encoder", components.TextEncoder!, ClipQ), ("text_encoder_2", components.TextEncoder2!, ClipQ),
        ], components.FuseLora, 0.25, seed: 1);
    }

    [Fact]
    public void AnSdxlLoraIsFusedIntoTheUnetAndBothTextEncoders()
    {
        // diffusers' SD / SDXL save_lora_weights keys: unet.<module>, text_encoder.<module>, text_encoder_2.<module>.
        const string UnetK = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"; // cross-attention: text width in
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        AssertEveryPartFused(
        [
            ("unet", components.Unet, UnetK), ("text_encoder", components.TextEncoder!, ClipQ), ("text_encoder_2", components.TextEncoder2!, ClipQ),
        ], components.FuseLora, 0.5, seed: 10);
        // An SD3 part (transformer) does not belong to a UNet pipeline; nothing else is touched when it is refused.
        string sd3 = Write("sd3.safetensors", Pair("transformer", TransformerQ, 32, 32, 4));
        using var fused = Weight(components.Unet, UnetK).clone();
        Assert.Contains("'transformer'", Assert.Throws<InvalidDataException>(() => components.FuseLora(sd3)).Message);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(Weight(components.Unet, UnetK), fused));
    }

    [Fact]
    public void AFluxLoraIsFusedIntoTheTransformerAndClip()
    {
        // diffusers' Flux save_lora_weights keys: transformer.<module> (double and single blocks) and text_encoder.<module>.
        string folder = Path.Combine(_dir, "flux");
        TinyFluxPipelineFolder.Write(folder);
        using var components = DiffusersSharp.Pipelines.Flux.FluxComponents.FromPretrained(folder, new PipelineLoadOptions());
        AssertEveryPartFused(
        [
            ("transformer", components.Transformer, "transformer_blocks.0.attn.to_q"),
            ("transformer", components.Transformer, "single_transformer_blocks.0.proj_mlp"),
            ("text_encoder", components.TextEncoder!, ClipQ),
        ], components.FuseLora, 0.5, seed: 20);
    }

    [Fact]
    public void APartThatDoesNotFitLeavesEveryModelAsItWas()
    {
        // The text_encoder part fits (and comes first); the transformer part is for another width: nothing may be fused.
        var tensors = Pair("text_encoder", ClipQ, 32, 32, 1).Concat(Pair("transformer", TransformerQ, 64, 64, 2)).ToDictionary();
        string path = Write("misfit.safetensors", tensors);
        string unet = Write("unet.safetensors", Pair("text_encoder", ClipQ, 32, 32, 1).Concat(Pair("unet", "down_blocks.0.attentions.0.proj_in", 32, 32, 3)).ToDictionary());
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = false });
        using var before = Weight(components.TextEncoder!, ClipQ).clone();
        Assert.Contains("transformer", Assert.Throws<ArgumentException>(() => components.FuseLora(path)).Message);
        Assert.Contains("unet", Assert.Throws<InvalidDataException>(() => components.FuseLora(unet)).Message);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(Weight(components.TextEncoder!, ClipQ), before));
        foreach (var t in tensors.Values) t.Dispose();
    }
}
