using DiffusersSharp.Tests.Pipelines;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// CogView4 transformer LoRAs loaded and fused by diffusers + PEFT (fixture local-diffusers/cogview4-lora, made by
/// tools/reference/sana_lumina2_auraflow_lora.py on local-diffusers/cogview4's tiny transformer): diffusers' own layout with
/// rank / alpha patterns in the adapter metadata (lora_scale 0.7), and without metadata and mixed ranks
/// (1.3). Every weight must change by what diffusers' fuse_lora changed it by, no other weight may change, and UnfuseLora
/// must give the weights back. Files diffusers refuses or loads nothing from are refused before any weight changes.
/// </summary>
public sealed class CogView4LoraParityTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cogview4-lora").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("peft", "pytorch_lora_weights.safetensors", 0.7)]
    [InlineData("nometa", "no_metadata.safetensors", 1.3)]
    public void CogView4LoraFusesAsDiffusersAndPeft(string fixtureCase, string file, double scale)
    {
        using var components = CogView4ParityTests.Components();
        FusedLoraParity.Check(output, components, components.Transformer, components.FuseLora, "local-diffusers/cogview4-lora", fixtureCase, file, scale);
    }

    public static TheoryData<string, Dictionary<string, long[]>, string> Refused => TransformerLoraRefusals.Common("transformer_blocks.0.attn1.to_q", 32, 32);

    [Theory]
    [MemberData(nameof(Refused))]
    public void LayoutsDiffusersCannotLoadAreRefused(string name, Dictionary<string, long[]> shapes, string message)
    {
        using var components = CogView4ParityTests.Components();
        TransformerLoraRefusals.Check<InvalidDataException>(output, _dir, components, components.Transformer, components.FuseLora, name, shapes, message);
    }

    /// <summary>A LoRA for another family (Sana's, in diffusers' layout) names modules CogView4 does not have.</summary>
    [Fact]
    public void AnotherFamilysLoraIsRefused()
    {
        using var components = CogView4ParityTests.Components();
        TransformerLoraRefusals.CheckFile<ArgumentException>(output, components, components.Transformer, components.FuseLora, "sana",
            Fixtures.Path("local-diffusers/sana-lora/pytorch_lora_weights.safetensors"), "not a Linear or Conv2d");
    }

    /// <summary>A pair of another width than its module is refused before any weight changes.</summary>
    [Fact]
    public void AMisShapedPairIsRefused()
    {
        using var components = CogView4ParityTests.Components();
        TransformerLoraRefusals.Check<ArgumentException>(output, _dir, components, components.Transformer, components.FuseLora, "wide",
            new() { ["transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"] = [2, 24], ["transformer.transformer_blocks.0.attn1.to_q.lora_B.weight"] = [32, 2] },
            "transformer_blocks.0.attn1.to_q");
    }
}
