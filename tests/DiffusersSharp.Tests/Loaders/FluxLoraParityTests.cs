using DiffusersSharp.Tests.Support;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// A Flux transformer LoRA as diffusers v0.36.0 saves it (save_lora_weights, with PEFT's LoraConfig as
/// lora_adapter_metadata: r 4, lora_alpha 8, a rank_pattern and an alpha_pattern) on every Linear of the tiny Flux model,
/// against what diffusers' load_lora_weights + PEFT v0.18.0 + fuse_lora(lora_scale=0.8) change each weight by (fixture
/// local-diffusers/flux-lora, made by tools/reference/flux_lora.py). Measured: 50 deltas, max |diff| 1.2e-7 (the deltas
/// reach 1.0); the bound is 1e-6 x max(1, max |delta|), as for the kohya files.
/// </summary>
public sealed class FluxLoraParityTests(ITestOutputHelper output)
{
    private const double LoraScale = 0.8;

    [Fact]
    public void APeftLoraSavedByDiffusersFusesAsDiffusersAndPeft()
    {
        string dir = Fixtures.Path("local-diffusers/flux-lora");
        using var components = LocalDiffusersFlux.Components();
        var weights = components.Transformer.named_modules().Where(m => m.module is Linear)
            .ToDictionary(m => $"transformer.{m.name}.weight", m => ((Linear)m.module).weight!, StringComparer.Ordinal);
        var before = weights.ToDictionary(w => w.Key, w => w.Value.clone(), StringComparer.Ordinal);

        int fused = components.FuseLora(Path.Combine(dir, "pytorch_lora_weights.safetensors"), LoraScale);

        var expected = Fixtures.Expected("local-diffusers/flux-lora/expected.safetensors");
        Assert.Equal(weights.Count, fused);
        Assert.Equal(weights.Keys.Order(StringComparer.Ordinal), expected.Keys.Select(k => k["delta.".Length..]).Order(StringComparer.Ordinal));
        double worst = 0;
        foreach (var (name, weight) in weights)
        {
            using var delta = weight - before[name];
            worst = Math.Max(worst, TensorAssert.Close(delta, expected[$"delta.{name}"], 1e-6, name));
        }
        output.WriteLine($"{fused} layers fused, {expected.Count} deltas compared, max |diff| {worst:G3}");
        foreach (var t in before.Values.Concat(expected.Values)) t.Dispose();
    }
}
