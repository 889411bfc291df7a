using DiffusersSharp.IO;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Z-Image transformer LoRAs loaded and fused by diffusers + PEFT (fixture local-diffusers/z-image-lora, made by
/// tools/reference/z_image_lora.py on local-diffusers/z-image's tiny transformer): diffusers' own layout with rank / alpha
/// patterns in the adapter metadata (lora_scale 0.7), a <c>diffusion_model.</c> lora_down / lora_up / alpha file with an
/// <c>attention.out</c> layer and mixed ranks (0.8), and PEFT's <c>lora_A.default.weight</c> names with alphas diffusers
/// drops (1.0). Every weight must change by what diffusers' fuse_lora changed it by, no other weight may change, and
/// UnfuseLora must give the weights back. Layouts diffusers cannot load are refused before any weight changes.
/// </summary>
public sealed class ZImageLoraParityTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("z-image-lora").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("peft", "pytorch_lora_weights.safetensors", 0.7)]
    [InlineData("comfy", "comfy_alpha.safetensors", 0.8)]
    [InlineData("default", "peft_default.safetensors", 1.0)]
    public void ZImageLoraFusesAsDiffusersAndPeft(string fixtureCase, string file, double scale)
    {
        using var components = LocalDiffusersZImage.Components();
        FusedLoraParity.Check(output, components, components.Transformer, components.FuseLora, "local-diffusers/z-image-lora", fixtureCase, file, scale);
    }

    /// <summary>Two files fused one after the other add up to the sum of their own fuses (each at its own scale).</summary>
    [Fact]
    public void TwoZImageLorasAddUp()
    {
        using var components = LocalDiffusersZImage.Components();
        var weights = components.Transformer.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
        var before = weights.ToDictionary(w => w.Key, w => w.Value.clone(), StringComparer.Ordinal);
        components.FuseLora(Fixtures.Path("local-diffusers/z-image-lora/comfy_alpha.safetensors"), 0.8);
        components.FuseLora(Fixtures.Path("local-diffusers/z-image-lora/peft_default.safetensors"), 1.0);
        Assert.Equal(2, components.FusedLoraCount);
        var all = Fixtures.Expected("local-diffusers/z-image-lora/expected.safetensors");
        foreach (var (name, weight) in weights)
        {
            using var expected = zeros_like(weight);
            foreach (var c in (string[])["comfy", "default"])
                if (all.TryGetValue($"{c}.delta.transformer.{name}", out var d)) expected.add_(d);
            using var delta = weight - before[name];
            TensorAssert.Close(delta, expected, 1e-6, $"{name} delta");
        }
        components.UnfuseLora();
        Assert.Equal(0, components.FusedLoraCount);
        foreach (var (name, weight) in weights) TensorAssert.Close(weight, before[name], 1e-6, $"{name} after unfuse");
        foreach (var t in before.Values.Concat(all.Values)) t.Dispose();
    }

    public static TheoryData<string, string, string> Refused => new()
    {
        // kohya names: diffusers v0.36's converter raises on them.
        { "kohya", """{"lora_unet_layers_0_attention_to_q.lora_down.weight": [2, 64], "lora_unet_layers_0_attention_to_q.lora_up.weight": [64, 2], "lora_unet_layers_0_attention_to_q.alpha": []}""", "kohya" },
        { "no-alpha", """{"diffusion_model.layers.0.attention.to_q.lora_down.weight": [2, 64], "diffusion_model.layers.0.attention.to_q.lora_up.weight": [64, 2]}""", "no .alpha" },
        { "no-up", """{"diffusion_model.layers.0.attention.to_q.lora_down.weight": [2, 64], "diffusion_model.layers.0.attention.to_q.alpha": []}""", "no lora_up" },
        { "mixed", """{"diffusion_model.layers.0.attention.to_q.lora_down.weight": [2, 64], "diffusion_model.layers.0.attention.to_q.lora_up.weight": [64, 2], "diffusion_model.layers.0.attention.to_q.alpha": [], "diffusion_model.layers.0.attention.to_k.lora_A.weight": [2, 64], "diffusion_model.layers.0.attention.to_k.lora_B.weight": [64, 2]}""", "does not read" },
        { "bias", """{"diffusion_model.layers.0.attention.to_q.lora_A.weight": [2, 64], "diffusion_model.layers.0.attention.to_q.lora_B.weight": [64, 2], "diffusion_model.layers.0.attention.to_q.lora_B.bias": [64]}""", "does not read" },
        { "dora", """{"transformer.layers.0.attention.to_q.lora_A.weight": [2, 64], "transformer.layers.0.attention.to_q.lora_B.weight": [64, 2], "transformer.layers.0.attention.to_q.lora_magnitude_vector.dora_scale": [64]}""", "DoRA" },
        { "a-alone", """{"diffusion_model.layers.0.attention.to_q.lora_A.weight": [2, 64]}""", "without its lora_B" },
    };

    /// <summary>Layouts diffusers refuses or cannot load are refused with a clear error, and no weight changes.</summary>
    [Theory]
    [MemberData(nameof(Refused))]
    public void LayoutsDiffusersCannotLoadAreRefused(string name, string shapes, string message)
    {
        var file = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, long[]>>(shapes)!
            .ToDictionary(p => p.Key, p => p.Value.Length == 0 ? tensor(2f) : randn(p.Value));
        string path = Path.Combine(_dir, $"{name}.safetensors");
        SafetensorsWriter.Save(path, file);
        using var components = LocalDiffusersZImage.Components();
        var before = components.Transformer.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var e = Assert.Throws<InvalidDataException>(() => components.FuseLora(path));
        Assert.Contains(message, e.Message);
        output.WriteLine($"{name}: {e.Message}");
        Assert.Equal(0, components.FusedLoraCount);
        foreach (var (n, p) in components.Transformer.named_parameters()) Assert.True(p.equal(before[n]).all().item<bool>(), n);
        foreach (var t in file.Values.Concat(before.Values)) t.Dispose();
    }

    /// <summary>A layer the transformer does not have (here a converted <c>.alpha</c> file whose keys keep diffusers'
    /// <c>transformer.</c> prefix, which diffusers' converter prefixes again) is refused before any weight changes.</summary>
    [Fact]
    public void AConvertedTransformerPrefixIsNoModule()
    {
        var file = new Dictionary<string, Tensor>
        {
            ["transformer.layers.0.attention.to_q.lora_A.weight"] = randn(2, 64), ["transformer.layers.0.attention.to_q.lora_B.weight"] = randn(64, 2),
            ["transformer.layers.0.attention.to_q.alpha"] = tensor(2f),
        };
        string path = Path.Combine(_dir, "prefixed.safetensors");
        SafetensorsWriter.Save(path, file);
        using var components = LocalDiffusersZImage.Components();
        var e = Assert.Throws<ArgumentException>(() => components.FuseLora(path));
        Assert.Contains("transformer.layers.0.attention.to_q", e.Message);
        Assert.Equal(0, components.FusedLoraCount);
        foreach (var t in file.Values) t.Dispose();
    }
}
