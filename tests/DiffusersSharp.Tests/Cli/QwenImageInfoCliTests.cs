using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>diffusers info</c> on the whole tiny Qwen-Image folder: every component recognised, sizes from the safetensors
/// headers (the text encoder's checkpoint as saved, vision tower and lm_head included, as transformers loads it).
/// </summary>
public sealed class QwenImageInfoCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qwenimage-info").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void DescribesTheTinyFolderFromItsHeaders()
    {
        TinyQwenImagePipelineFolder.Write(_dir);
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _dir);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("QwenImagePipeline", (string?)json["pipeline"]);
        var components = json["components"]!.AsObject();
        Assert.Equal(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        foreach (var (name, cls, file) in new[]
        {
            ("transformer", "QwenImageTransformer2DModel", "diffusion_pytorch_model.safetensors"), ("vae", "AutoencoderKLQwenImage", "diffusion_pytorch_model.safetensors"),
            ("text_encoder", "Qwen2_5_VLForConditionalGeneration", "model.safetensors"),
        })
        {
            var component = components[name]!;
            Assert.Equal(cls, (string?)component["class"]);
            var header = SafetensorsHeader.Read(Path.Combine(_dir, name, file));
            Assert.Equal("safetensors", (string?)component["source"]);
            Assert.Equal(header.Tensors.Count, (long)component["tensors"]!);
            Assert.Equal(header.Tensors.Values.Sum(t => t.ElementCount), (long)component["parameters"]!);
        }
        Assert.Equal("Qwen2Tokenizer", (string?)components["tokenizer"]!["class"]);
    }
}
