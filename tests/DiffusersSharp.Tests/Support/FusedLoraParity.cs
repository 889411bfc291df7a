using DiffusersSharp.Pipelines;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// The check of the transformer-LoRA fixtures made by diffusers + PEFT (z-image-lora, qwenimage-lora): after fusing one
/// file at its scale, every weight must have changed by diffusers' <c>fuse_lora</c> delta
/// (<c>&lt;case&gt;.delta.transformer.&lt;parameter&gt;</c>, within 1e-6 of its magnitude), no other weight may have changed,
/// and <see cref="PipelineComponents.UnfuseLora"/> must give the weights back.
/// </summary>
public static class FusedLoraParity
{
    /// <summary>Fuses <paramref name="file"/> of fixture <paramref name="fixture"/> with <paramref name="fuse"/> and checks
    /// the transformer's weights against <paramref name="fixtureCase"/>'s deltas.</summary>
    public static void Check(ITestOutputHelper output, PipelineComponents components, nn.Module transformer, Func<string, double, int> fuse,
        string fixture, string fixtureCase, string file, double scale)
    {
        var weights = transformer.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
        var before = weights.ToDictionary(w => w.Key, w => w.Value.clone(), StringComparer.Ordinal);
        int layers = fuse(Fixtures.Path($"{fixture}/{file}"), scale);

        string prefix = $"{fixtureCase}.delta.transformer.";
        var all = Fixtures.Expected($"{fixture}/expected.safetensors");
        var expected = all.Where(e => e.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(e => e.Key[prefix.Length..], e => e.Value, StringComparer.Ordinal);
        Assert.Equal(expected.Count, layers);
        var changed = new List<string>();
        double worst = 0;
        foreach (var (name, weight) in weights)
        {
            using var delta = weight - before[name];
            if (delta.abs().max().item<float>() > 0) changed.Add(name);
            if (expected.TryGetValue(name, out var theirs))
                worst = Math.Max(worst, TensorAssert.Close(delta, theirs, 1e-6, $"{name} delta"));
        }
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), changed.Order(StringComparer.Ordinal));
        output.WriteLine($"{fixtureCase}: {layers} layers, {expected.Count} deltas compared, max |diff| {worst:G3}");

        components.UnfuseLora();
        foreach (var (name, weight) in weights) TensorAssert.Close(weight, before[name], 1e-6, $"{name} after unfuse");
        foreach (var t in before.Values.Concat(all.Values)) t.Dispose();
    }
}
