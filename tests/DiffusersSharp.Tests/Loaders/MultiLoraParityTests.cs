using System.Text.Json.Nodes;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Two LoRAs fused together against diffusers v0.36.0 and PEFT v0.18.0 (fixture local-diffusers/multi-lora, made by
/// tools/reference/multi_lora.py; see its README): kohya-lora's sd15 file and a PEFT-layout file with mixed ranks and no
/// alphas, loaded as two adapters, weighed with set_adapters([0.6, -0.45]) and fused with fuse_lora(lora_scale=0.8).
/// Fusing each file at lora_scale x its adapter weight must change every weight as diffusers did, including diffusers'
/// default alpha for the PEFT file (the rank of its first layer, not each layer's own).
/// </summary>
public sealed class MultiLoraParityTests(ITestOutputHelper output)
{
    // kohya layers diffusers' converter maps to no module (KohyaLoraParityTests): we fuse them, diffusers drops them.
    private static readonly string[] OursOnly = ["unet.conv_in", "unet.time_embedding.linear_1"];

    [Fact]
    public void TwoLorasFuseAsDiffusersAdapters()
    {
        string dir = Fixtures.Path("local-diffusers/multi-lora");
        var meta = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "meta.json")))!;
        double loraScale = meta["lora_scale"]!.GetValue<double>();
        var weights = meta["adapter_weights"]!.AsArray().Select(w => w!.GetValue<double>()).ToArray();
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        var modules = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (component, model) in new Dictionary<string, nn.Module> { ["unet"] = components.Unet, ["text_encoder"] = components.TextEncoder! })
            foreach (var (name, module) in model.named_modules())
            {
                if (module is Linear l) modules[$"{component}.{name}"] = l.weight!;
                else if (module is Conv2d conv) modules[$"{component}.{name}"] = conv.weight!;
            }
        var before = modules.ToDictionary(m => m.Key, m => m.Value.clone(), StringComparer.Ordinal);

        components.FuseLora(Fixtures.Path("local-diffusers/kohya-lora/sd15.safetensors"), loraScale * weights[0]);
        components.FuseLora(Path.Combine(dir, "peft.safetensors"), loraScale * weights[1]);

        var expected = Fixtures.Expected("local-diffusers/multi-lora/expected.safetensors");
        Assert.Equal(meta["changed"]!.GetValue<int>(), expected.Count);
        var changed = new List<string>();
        double worst = 0;
        foreach (var (module, weight) in modules)
        {
            using var delta = weight - before[module];
            if (delta.abs().max().item<float>() > 0) changed.Add(module);
            if (expected.TryGetValue($"delta.{module}", out var theirs))
                worst = Math.Max(worst, TensorAssert.Close(delta, theirs, 1e-6, $"{module} delta"));
        }
        Assert.Equal(expected.Keys.Select(k => k["delta.".Length..]).Concat(OursOnly).Order(StringComparer.Ordinal), changed.Order(StringComparer.Ordinal));
        output.WriteLine($"{expected.Count} deltas compared, max |diff| {worst:G3}");
        foreach (var t in before.Values.Concat(expected.Values)) t.Dispose();
    }
}
