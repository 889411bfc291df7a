using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>diffusers info</c> on the whole tiny FLUX.2 [klein] folder: every component recognised (the text encoder as
/// Qwen3ForCausalLM), sizes from the safetensors headers (the checkpoint as saved, lm_head included).
/// </summary>
public sealed class Flux2KleinInfoCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("flux2-klein-info").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void DescribesTheTinyFolderFromItsHeaders()
    {
        TinyFlux2KleinPipelineFolder.Write(_dir, distilled: true);
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _dir);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("Flux2KleinPipeline", (string?)json["pipeline"]);
        var components = json["components"]!.AsObject();
        Assert.Equal(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        foreach (var (name, cls, file) in new[]
        {
            ("transformer", "Flux2Transformer2DModel", "diffusion_pytorch_model.safetensors"), ("vae", "AutoencoderKLFlux2", "diffusion_pytorch_model.safetensors"),
            ("text_encoder", "Qwen3ForCausalLM", "model.safetensors"),
        })
        {
            var component = components[name]!;
            Assert.Equal(cls, (string?)component["class"]);
            var header = SafetensorsHeader.Read(Path.Combine(_dir, name, file));
            Assert.Equal(header.Tensors.Count, (long)component["tensors"]!);
            Assert.Equal(header.Tensors.Values.Sum(t => t.ElementCount), (long)component["parameters"]!);
        }
        Assert.Equal("Qwen2TokenizerFast", (string?)components["tokenizer"]!["class"]);
    }
}
