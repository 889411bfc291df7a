using System.Text.Json.Nodes;
using DiffusersSharp.Loaders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// kohya sd-scripts LoRAs against diffusers v0.36.0's own loader and PEFT v0.18.0's own LoRA layers (fixture
/// local-diffusers/kohya-lora, made by tools/reference/kohya_lora.py; see its README): tiny-sdxl with SGM block names
/// and lora_te1_ / lora_te2_, tiny-sd15 with diffusers names and lora_te_, LoRA and LoCon (3x3 and 1x1 convs), ranks
/// and alphas that vary per layer, fused with lora_scale 0.7. Every layer must resolve to the module diffusers'
/// converter names, and every weight must change by what diffusers' fuse_lora changed it by.
/// </summary>
public sealed class KohyaLoraParityTests(ITestOutputHelper output)
{
    private const double LoraScale = 0.7;

    // Layers diffusers' _convert_unet_lora_key does not turn into a module path ("time.embedding.linear",
    // "conv.in"): PEFT finds no such module and diffusers drops them with an "unexpected keys" warning. We fuse them.
    private static readonly Dictionary<string, string[]> OursOnly = new()
    {
        ["sd15"] = ["lora_unet_conv_in", "lora_unet_time_embedding_linear_1"],
        ["sdxl"] = [],
    };

    private static Dictionary<string, Tensor> Weights(StableDiffusionComponents c)
    {
        var models = new Dictionary<string, nn.Module?> { ["unet"] = c.Unet, ["text_encoder"] = c.TextEncoder, ["text_encoder_2"] = c.TextEncoder2 };
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (component, model) in models)
        {
            if (model is null) continue;
            foreach (var (name, module) in model.named_modules())
            {
                if (module is Linear l) weights[$"{component}.{name}"] = l.weight!;
                else if (module is Conv2d conv) weights[$"{component}.{name}"] = conv.weight!;
            }
        }
        return weights;
    }

    [Theory]
    [InlineData("sdxl", "tiny-sdxl/model")]
    [InlineData("sd15", "tiny-sd15/model")]
    public void KohyaLoraFusesAsDiffusersAndPeft(string name, string model)
    {
        string dir = Fixtures.Path("local-diffusers/kohya-lora");
        var meta = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "meta.json")))![name]!;
        Assert.Equal(LoraScale, meta["lora_scale"]!.GetValue<double>());
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path(model), new PipelineLoadOptions());
        var models = new Dictionary<string, nn.Module?> { ["unet"] = components.Unet, ["text_encoder"] = components.TextEncoder, ["text_encoder_2"] = components.TextEncoder2 };

        // 1. Each kohya layer resolves to the module diffusers' converter names for it.
        var tables = models.Where(m => m.Value is not null).ToDictionary(m => m.Key, m => KohyaModuleNames.Table(m.Value!));
        var diffusersNone = new List<string>();
        foreach (var (layer, info) in meta["layers"]!.AsObject())
        {
            string component = info!["component"]!.GetValue<string>();
            string stripped = layer[(layer.IndexOf('_', layer.IndexOf('_') + 1) + 1)..]; // without lora_unet_ / lora_te*_
            Assert.True(tables[component].TryGetValue(stripped, out var ours), $"{layer}: ours resolves it to no module");
            if (info["module"]?.GetValue<string>() is { } theirs) Assert.Equal(theirs, ours);
            else diffusersNone.Add(layer);
        }
        Assert.Equal(OursOnly[name], diffusersNone.Order(StringComparer.Ordinal));

        // 2. The fused weights: ours after - before against diffusers' after - before, module by module.
        var weights = Weights(components);
        var before = weights.ToDictionary(w => w.Key, w => w.Value.clone(), StringComparer.Ordinal);
        int fused = components.FuseLora(Path.Combine(dir, $"{name}.safetensors"), LoraScale);
        Assert.Equal(meta["layers"]!.AsObject().Count, fused);
        var expected = Fixtures.Expected($"local-diffusers/kohya-lora/{name}.expected.safetensors");
        var oursOnlyModules = OursOnly[name].Select(l => $"unet.{tables["unet"][l["lora_unet_".Length..]]}").ToHashSet();
        var changed = new List<string>();
        double worst = 0, worstRelative = 0;
        foreach (var (module, weight) in weights)
        {
            using var delta = weight - before[module];
            bool moved = delta.abs().max().item<float>() > 0;
            if (moved) changed.Add(module);
            if (!expected.TryGetValue($"delta.{module}", out var theirs)) continue;
            double magnitude = theirs.abs().max().item<float>();
            double err = TensorAssert.Close(delta, theirs, 1e-6, $"{name} {module} delta");
            worst = Math.Max(worst, err);
            worstRelative = Math.Max(worstRelative, err / magnitude);
        }
        var expectedModules = expected.Keys.Select(k => k["delta.".Length..]).Concat(oursOnlyModules).Order(StringComparer.Ordinal);
        Assert.Equal(expectedModules, changed.Order(StringComparer.Ordinal));
        output.WriteLine($"{name}: {fused} layers, {expected.Count} deltas compared, max |diff| {worst:G3} (worst relative to its delta's max {worstRelative:G3})");
        foreach (var t in before.Values.Concat(expected.Values)) t.Dispose();
    }
}
