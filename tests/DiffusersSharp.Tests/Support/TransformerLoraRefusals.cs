using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// The refusal checks the transformer-only LoRA loaders share (Sana, Lumina2, AuraFlow: diffusers' own layout): a file
/// written from key -> shape, fused, must throw <typeparamref name="TException"/> with the message, and leave every weight
/// and the fused count as they were.
/// </summary>
public static class TransformerLoraRefusals
{
    /// <summary>
    /// Cases every family shares, on <paramref name="module"/> (a Linear of [<paramref name="outputs"/>,
    /// <paramref name="inputs"/>]): name, key -> shape ([] for a scalar), and what the message must say.
    /// </summary>
    public static TheoryData<string, Dictionary<string, long[]>, string> Common(string module, long outputs, long inputs) => new()
    {
        // diffusers raises "Invalid LoRA checkpoint" on a key without "lora".
        { "alpha", Pair("transformer." + module, outputs, inputs, ("transformer." + module + ".alpha", [])), "without 'lora'" },
        // diffusers keeps transformer.* keys only: it loads nothing from these.
        { "peft-prefix", Pair("base_model.model." + module, outputs, inputs), "no transformer.* keys" },
        { "kohya", new() { ["lora_unet_" + module.Replace('.', '_') + ".lora_down.weight"] = [2, inputs], ["lora_unet_" + module.Replace('.', '_') + ".lora_up.weight"] = [outputs, 2], ["lora_unet_" + module.Replace('.', '_') + ".alpha"] = [] }, "no transformer.* keys" },
        { "text-encoder", Pair("transformer." + module, outputs, inputs, ("text_encoder.layers.0.q_proj.lora_A.weight", [2, 8]), ("text_encoder.layers.0.q_proj.lora_B.weight", [8, 2])), "outside transformer.*" },
        { "dora", Pair("transformer." + module, outputs, inputs, ("transformer." + module + ".lora_magnitude_vector.dora_scale", [outputs])), "DoRA" },
        { "a-alone", new() { ["transformer." + module + ".lora_A.weight"] = [2, inputs] }, "without its up" },
    };

    private static Dictionary<string, long[]> Pair(string stem, long outputs, long inputs, params (string Key, long[] Shape)[] more)
    {
        var d = new Dictionary<string, long[]> { [stem + ".lora_A.weight"] = [2, inputs], [stem + ".lora_B.weight"] = [outputs, 2] };
        foreach (var (k, s) in more) d[k] = s;
        return d;
    }

    /// <summary>Writes the file to <paramref name="dir"/>, fuses it with <paramref name="fuse"/> and checks the refusal.</summary>
    public static void Check<TException>(ITestOutputHelper output, string dir, PipelineComponents components, nn.Module transformer,
        Func<string, double, int> fuse, string name, Dictionary<string, long[]> shapes, string message) where TException : Exception
    {
        var file = shapes.ToDictionary(p => p.Key, p => p.Value.Length == 0 ? tensor(2f) : randn(p.Value));
        string path = Path.Combine(dir, $"{name}.safetensors");
        SafetensorsWriter.Save(path, file);
        CheckFile<TException>(output, components, transformer, fuse, name, path, message);
        foreach (var t in file.Values) t.Dispose();
    }

    /// <summary>Fuses the file at <paramref name="path"/> and checks the refusal.</summary>
    public static void CheckFile<TException>(ITestOutputHelper output, PipelineComponents components, nn.Module transformer,
        Func<string, double, int> fuse, string name, string path, string message) where TException : Exception
    {
        var before = transformer.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var e = Assert.Throws<TException>(() => fuse(path, 0.8));
        Assert.Contains(message, e.Message);
        output.WriteLine($"{name}: {e.Message}");
        Assert.Equal(0, components.FusedLoraCount);
        foreach (var (n, p) in transformer.named_parameters()) Assert.True(p.equal(before[n]).all().item<bool>(), n);
        foreach (var t in before.Values) t.Dispose();
    }
}
