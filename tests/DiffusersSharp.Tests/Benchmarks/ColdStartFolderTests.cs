using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.Benchmarks;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Cli;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Benchmarks;

/// <summary>
/// <c>bench --save-model</c>: a random SD3 pipeline written to local disk without text encoders, as diffusers' cold-start
/// reference saves one, which <c>generate --prompt-embeds</c> then runs from a fresh process.
/// </summary>
public sealed class ColdStartFolderTests() : CliTempDirectory("ds-cold-")
{
    private static readonly string Model = Fixtures.TinySd3Model;

    private string Save(out JsonElement report)
    {
        string folder = Path.Combine(Dir, "random");
        var (code, stdout, stderr) = CliRunner.Run(["bench", "--random-weights", Model, "--dtype", "float32", "--max-sequence-length", "8", "--save-model", folder]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        report = doc.RootElement.Clone();
        return folder;
    }

    [Fact]
    public void TheSavedFolderLoadsWithoutTextEncodersAndGeneratesFromItsEmbeddings()
    {
        string folder = Save(out var report);
        Assert.Equal(Path.GetFullPath(folder), report.GetProperty("folder").GetString());
        string embedsFile = report.GetProperty("prompt_embeds").GetString()!;
        Assert.Equal(Path.Combine(Path.GetFullPath(folder), RandomModelFolder.PromptEmbedsFile), embedsFile);
        long bytes = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.Equal(bytes, report.GetProperty("bytes").GetInt64());

        int jointDim;
        using (var components = StableDiffusion3Components.FromPretrained(folder, new PipelineLoadOptions()))
        using (var tiny = StableDiffusion3Components.FromPretrained(Model, new PipelineLoadOptions()))
        {
            Assert.Null(components.TextEncoder);
            Assert.Null(components.TextEncoder2);
            Assert.Null(components.TextEncoder3);
            Assert.Null(components.Tokenizer);
            Assert.Equal(JsonSerializer.Serialize(tiny.Transformer.Config), JsonSerializer.Serialize(components.Transformer.Config));
            jointDim = tiny.Transformer.Config.JointAttentionDim;
            Assert.Equal(RandomWeights.CountParameters(tiny.Transformer), report.GetProperty("parameters").GetProperty("transformer").GetInt64());
            Assert.Equal(RandomWeights.CountParameters(tiny.Vae), report.GetProperty("parameters").GetProperty("vae").GetInt64());
            Assert.Equal(RandomWeights.CountParameters(tiny.Vae), RandomWeights.CountParameters(components.Vae));
        }
        using (var embeds = SafetensorsFile.Open(embedsFile))
        {
            Assert.Equal(["negative_pooled_prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "prompt_embeds"], embeds.Tensors.Keys.Order(StringComparer.Ordinal));
            using var rows = embeds.Read("prompt_embeds");
            Assert.Equal([1L, 77 + 8, jointDim], rows.shape);
        }

        string image = Out();
        var (code, _, stderr) = CliRunner.Run(["generate", "--model", folder, "--prompt-embeds", embedsFile, "--steps", "1", "--height", "64", "--width", "48", "--output", image]);
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(image));

        // Prompts need the text encoders the folder leaves out: a clear error, and no image.
        var withPrompt = CliRunner.Run(["generate", "--model", folder, "--prompt", "a red circle", "--steps", "1", "--height", "64", "--width", "48", "--output", Out("prompt.png")]);
        Assert.NotEqual(0, withPrompt.Code);
        Assert.Contains("no text encoders", withPrompt.Err);
        Assert.False(File.Exists(Out("prompt.png")));
    }

    [Fact]
    public void AFolderWithOnlySomeClipPartsIsRefusedBeforeLoading()
    {
        string folder = Save(out _);
        string indexPath = Path.Combine(folder, "model_index.json");
        var index = JsonNode.Parse(File.ReadAllText(indexPath))!.AsObject();
        index["text_encoder"] = new JsonArray("transformers", "CLIPTextModelWithProjection");
        File.WriteAllText(indexPath, index.ToJsonString());
        var error = Assert.Throws<InvalidDataException>(() => StableDiffusion3Components.FromPretrained(folder, new PipelineLoadOptions()));
        Assert.Contains("only some of text_encoder, text_encoder_2, tokenizer, tokenizer_2", error.Message);
    }

    [Theory]
    [InlineData("--model|M|--save-model|F", "give --random-weights")]
    [InlineData("--random-weights|sd1.5|--save-model|F", "SD3")]
    public void BadSaveOptionsExitWithCode2AndWriteNothing(string args, string message)
    {
        string folder = Path.Combine(Dir, "never");
        var list = args.Split('|').Select(a => a == "M" ? Model : a == "F" ? folder : a).ToList();
        var (code, stdout, stderr) = CliRunner.Run(["bench", .. list]);
        Assert.Equal(2, code);
        Assert.Empty(stdout);
        Assert.Contains(message, stderr);
        Assert.False(Directory.Exists(folder));
    }
}
