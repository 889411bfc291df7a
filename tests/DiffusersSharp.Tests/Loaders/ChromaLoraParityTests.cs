using DiffusersSharp.Pipelines.Chroma;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// A Chroma transformer LoRA saved, loaded and fused by diffusers + PEFT (fixture local-diffusers/chroma-lora, made by
/// tools/reference/chroma_lora.py: every Linear of local-diffusers/chroma's tiny transformer, the approximator's included,
/// with rank / alpha patterns in the adapter metadata, fused with lora_scale 0.7): every weight must change by what
/// diffusers' fuse_lora changed it by, and UnfuseLora must give the weights back.
/// </summary>
public sealed class ChromaLoraParityTests(ITestOutputHelper output)
{
    private const double LoraScale = 0.7;

    [Fact]
    public void ChromaLoraFusesAsDiffusersAndPeft()
    {
        string dir = Fixtures.Path("local-diffusers/chroma-lora");
        using var components = LocalDiffusersChroma.Components();
        var weights = components.Transformer.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
        var before = weights.ToDictionary(w => w.Key, w => w.Value.clone(), StringComparer.Ordinal);
        int layers = components.FuseLora(Path.Combine(dir, "pytorch_lora_weights.safetensors"), LoraScale);

        var expected = Fixtures.Expected("local-diffusers/chroma-lora/expected.safetensors");
        Assert.Equal(expected.Count, layers);
        var changed = new List<string>();
        double worst = 0;
        foreach (var (name, weight) in weights)
        {
            using var delta = weight - before[name];
            if (delta.abs().max().item<float>() > 0) changed.Add($"delta.transformer.{name}");
            if (expected.TryGetValue($"delta.transformer.{name}", out var theirs))
                worst = Math.Max(worst, TensorAssert.Close(delta, theirs, 1e-6, $"{name} delta"));
        }
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), changed.Order(StringComparer.Ordinal));
        Assert.Contains(changed, n => n.Contains("distilled_guidance_layer", StringComparison.Ordinal));
        output.WriteLine($"{layers} layers, {expected.Count} deltas compared, max |diff| {worst:G3}");

        components.UnfuseLora();
        foreach (var (name, weight) in weights) TensorAssert.Close(weight, before[name], 1e-6, $"{name} after unfuse");
        foreach (var t in before.Values.Concat(expected.Values)) t.Dispose();
    }

    [Fact]
    public void FluxOriginalLayoutsAreRefused()
    {
        using var components = LocalDiffusersChroma.Components();
        var e = Assert.Throws<InvalidDataException>(() => components.FuseLora(Fixtures.Path("local-diffusers/kohya-lora/sd15.safetensors")));
        Assert.Contains("kohya", e.Message);
        Assert.Equal(0, components.FusedLoraCount);
    }
}
