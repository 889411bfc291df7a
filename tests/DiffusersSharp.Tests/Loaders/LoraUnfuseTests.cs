using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>UnfuseLora (diffusers' <c>unfuse_lora</c>) on tiny-sdxl with the kohya fixture's LoRA fused twice.</summary>
public sealed class LoraUnfuseTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static Dictionary<string, Tensor> Weights(StableDiffusionComponents c) =>
        new[] { ("unet", (nn.Module?)c.Unet), ("text_encoder", c.TextEncoder), ("text_encoder_2", c.TextEncoder2) }
            .Where(m => m.Item2 is not null)
            .SelectMany(m => m.Item2!.named_modules().Select(n => (Name: $"{m.Item1}.{n.name}", n.module)))
            .Select(n => (n.Name, Weight: n.module switch { Linear l => l.weight, Conv2d conv => conv.weight, _ => null }))
            .Where(n => n.Weight is not null)
            .ToDictionary(n => n.Name, n => (Tensor)n.Weight!, StringComparer.Ordinal);

    [Fact]
    public void UnfusingTakesEveryFusedLoraBackOutNewestFirst()
    {
        string lora = Fixtures.Path("local-diffusers/kohya-lora/sdxl.safetensors");
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        var weights = Weights(components);
        var before = weights.ToDictionary(w => w.Key, w => w.Value.clone(), StringComparer.Ordinal);
        Assert.Equal(0, components.FusedLoraCount);

        components.FuseLora(lora, 0.7);
        components.FuseLora(lora, -0.25);
        Assert.Equal(2, components.FusedLoraCount);
        int moved = weights.Count(w => TensorAssert.MaxAbsDiff(w.Value, before[w.Key]) > 0);
        Assert.True(moved > 20, $"only {moved} weights changed");

        components.UnfuseLora();
        Assert.Equal(0, components.FusedLoraCount);
        // Each fuse and unfuse rounds once into float32: within a few ulp of the original.
        double worst = 0;
        foreach (var (name, weight) in weights)
        {
            double scale = Math.Max(1, before[name].abs().max().item<float>());
            double err = TensorAssert.MaxAbsDiff(weight, before[name]) / scale;
            worst = Math.Max(worst, err);
            Assert.True(err <= 1e-6, $"{name} did not come back ({err:G3})");
        }
        output.WriteLine($"worst relative difference after unfusing: {worst:G3}");

        // Unfusing again does nothing; fusing works again after it.
        components.UnfuseLora();
        Assert.Equal(0, components.FusedLoraCount);
        components.FuseLora(lora, 0.7);
        Assert.Equal(1, components.FusedLoraCount);
        Assert.Equal(moved, weights.Count(w => TensorAssert.MaxAbsDiff(w.Value, before[w.Key]) > 0));
        foreach (var t in before.Values) t.Dispose();
    }
}
