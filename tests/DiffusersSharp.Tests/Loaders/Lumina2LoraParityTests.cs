using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Pipelines;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Lumina2 transformer LoRAs loaded and fused by diffusers + PEFT (fixture local-diffusers/lumina2-lora, made by
/// tools/reference/sana_lumina2_auraflow_lora.py): on local-diffusers/lumina2's tiny transformer, diffusers' own layout with
/// rank / alpha patterns in the adapter metadata (lora_scale 0.7) and without metadata, mixed ranks (1.3); on a zeroed
/// full-width transformer (wide/config.json: the converter's qkv split is Lumina-Image-2.0's), Lumina's original training
/// layout converted by <c>_convert_non_diffusers_lumina2_lora_to_diffusers</c> (0.6), compared on the first and last
/// 16 x 16 of every changed weight. Files diffusers refuses or loads nothing from are refused before any weight changes.
/// </summary>
public sealed class Lumina2LoraParityTests(ITestOutputHelper output) : IDisposable
{
    private const string Fixture = "local-diffusers/lumina2-lora";
    private readonly string _dir = Directory.CreateTempSubdirectory("lumina2-lora").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("peft", "pytorch_lora_weights.safetensors", 0.7)]
    [InlineData("nometa", "no_metadata.safetensors", 1.3)]
    public void Lumina2LoraFusesAsDiffusersAndPeft(string fixtureCase, string file, double scale)
    {
        using var components = Lumina2ParityTests.Components();
        FusedLoraParity.Check(output, components, components.Transformer, components.FuseLora, Fixture, fixtureCase, file, scale);
    }

    /// <summary>Lumina's original layout: qkv split into to_q / to_k / to_v, out, w1..w3, adaLN_modulation.1 renamed.</summary>
    [Fact]
    public void OriginalLayoutFusesAsDiffusers()
    {
        using var transformer = new Lumina2Transformer2DModel(ConfigJson.Read<Lumina2Transformer2DModelConfig>(Fixtures.Path($"{Fixture}/wide/config.json")));
        using (no_grad())
            foreach (var (_, p) in transformer.named_parameters()) p.zero_();
        using var fused = new FusedLoras();
        int layers = LoraWeights.FuseLumina2(Fixtures.Path($"{Fixture}/original.safetensors"), transformer, 0.6, fused);

        var all = Fixtures.Expected($"{Fixture}/expected.safetensors");
        const string Prefix = "original.delta.transformer.";
        var expected = all.Keys.Where(k => k.StartsWith(Prefix, StringComparison.Ordinal) && k.EndsWith(".head", StringComparison.Ordinal))
            .Select(k => k[Prefix.Length..^".head".Length]).ToHashSet(StringComparer.Ordinal);
        Assert.Equal(23, expected.Count);
        Assert.Equal(expected.Count, layers);
        double worst = 0;
        var changed = new List<string>();
        foreach (var (name, p) in transformer.named_parameters())
        {
            // The weights were zero: each is its delta.
            if (p.abs().max().item<float>() > 0) changed.Add(name);
            if (!expected.Contains(name)) continue;
            long rows = p.shape[0], cols = p.shape[1];
            worst = Math.Max(worst, TensorAssert.Close(p.narrow(0, 0, 16).narrow(1, 0, 16), all[$"{Prefix}{name}.head"], 1e-6, $"{name} head"));
            worst = Math.Max(worst, TensorAssert.Close(p.narrow(0, rows - 16, 16).narrow(1, cols - 16, 16), all[$"{Prefix}{name}.tail"], 1e-6, $"{name} tail"));
        }
        Assert.Equal(expected.Order(StringComparer.Ordinal), changed.Order(StringComparer.Ordinal));
        output.WriteLine($"original: {layers} layers, max |diff| {worst:G3}");

        fused.Unfuse();
        foreach (var (name, p) in transformer.named_parameters()) Assert.True(p.abs().max().item<float>() <= 1e-6, $"{name} after unfuse");
        foreach (var t in all.Values) t.Dispose();
    }

    public static TheoryData<string, Dictionary<string, long[]>, string> Refused => TransformerLoraRefusals.Common("layers.0.attn.to_q", 48, 48);

    [Theory]
    [MemberData(nameof(Refused))]
    public void LayoutsDiffusersCannotLoadAreRefused(string name, Dictionary<string, long[]> shapes, string message)
    {
        using var components = Lumina2ParityTests.Components();
        TransformerLoraRefusals.Check<InvalidDataException>(output, _dir, components, components.Transformer, components.FuseLora, name, shapes, message);
    }

    /// <summary>One full-width original-layout block (layers.0), with <paramref name="change"/> applied.</summary>
    private static Dictionary<string, long[]> OriginalBlock(Action<Dictionary<string, long[]>> change)
    {
        var d = new Dictionary<string, long[]>();
        foreach (var (part, inputs, outputs) in new (string, long, long)[] { ("attention.qkv", 2304, 3840), ("attention.out", 2304, 2304), ("feed_forward.w1", 2304, 16),
                     ("feed_forward.w2", 16, 2304), ("feed_forward.w3", 2304, 16), ("adaLN_modulation.1", 1024, 9216) })
        {
            d[$"diffusion_model.layers.0.{part}.lora_A.weight"] = [2, inputs];
            d[$"diffusion_model.layers.0.{part}.lora_B.weight"] = [outputs, 2];
        }
        change(d);
        return d;
    }

    public static TheoryData<string, Dictionary<string, long[]>, string> RefusedOriginal => new()
    {
        // torch.split(lora_up, [2304, 768, 768]) raises on any other row count.
        { "qkv-width", OriginalBlock(d => d["diffusion_model.layers.0.attention.qkv.lora_B.weight"] = [144, 2]), "2304 / 768 / 768" },
        { "no-w3", OriginalBlock(d => { d.Remove("diffusion_model.layers.0.feed_forward.w3.lora_A.weight"); d.Remove("diffusion_model.layers.0.feed_forward.w3.lora_B.weight"); }),
          "without diffusion_model.layers.0.feed_forward.w3.lora_A.weight" },
        // Indices 0 and 2: the converter counts two blocks and looks for layers.1.
        { "gap", OriginalBlock(d => { foreach (var k in d.Keys.ToList()) d[k.Replace("layers.0.", "layers.2.")] = d[k]; foreach (var k in d.Keys.Where(k => k.Contains("layers.2.attention.out")).ToList()) d.Remove(k); }),
          "without diffusion_model.layers.1." },
        { "alpha", OriginalBlock(d => d["diffusion_model.layers.0.attention.out.alpha"] = []), "does not read" },
        { "mixed", OriginalBlock(d => { d["transformer.layers.1.attn.to_q.lora_A.weight"] = [2, 48]; d["transformer.layers.1.attn.to_q.lora_B.weight"] = [48, 2]; }), "mixes" },
    };

    [Theory]
    [MemberData(nameof(RefusedOriginal))]
    public void OriginalLayoutsDiffusersRaisesOnAreRefused(string name, Dictionary<string, long[]> shapes, string message)
    {
        using var components = Lumina2ParityTests.Components();
        TransformerLoraRefusals.Check<InvalidDataException>(output, _dir, components, components.Transformer, components.FuseLora, name, shapes, message);
    }

    /// <summary>A LoRA for another family (Z-Image's, in diffusers' layout) names modules Lumina2 does not have.</summary>
    [Fact]
    public void AnotherFamilysLoraIsRefused()
    {
        using var components = Lumina2ParityTests.Components();
        TransformerLoraRefusals.CheckFile<ArgumentException>(output, components, components.Transformer, components.FuseLora, "z-image",
            Fixtures.Path("local-diffusers/z-image-lora/pytorch_lora_weights.safetensors"), "not a Linear or Conv2d");
    }

    /// <summary>An original-layout file fits only a Lumina-Image-2.0-wide transformer: on the tiny one its modules are too narrow.</summary>
    [Fact]
    public void AnOriginalLayoutFileDoesNotFitTheTinyTransformer()
    {
        using var components = Lumina2ParityTests.Components();
        TransformerLoraRefusals.CheckFile<ArgumentException>(output, components, components.Transformer, components.FuseLora, "original-on-tiny",
            Fixtures.Path($"{Fixture}/original.safetensors"), "noise_refiner.0.attn.to_q");
    }
}
