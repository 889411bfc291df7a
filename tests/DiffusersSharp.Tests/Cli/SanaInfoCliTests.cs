using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>diffusers info</c> on the whole tiny Sana folder: every component recognised (Gemma2Model, GemmaTokenizerFast,
/// SanaTransformer2DModel, AutoencoderDC), sizes from the safetensors headers.
/// </summary>
public sealed class SanaInfoCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sana-info").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void DescribesTheTinyFolderFromItsHeaders()
    {
        TinySanaPipelineFolder.Write(_dir);
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _dir);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("SanaPipeline", (string?)json["pipeline"]);
        var components = json["components"]!.AsObject();
        Assert.Equal(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        foreach (var (name, cls, file) in new[]
        {
            ("transformer", "SanaTransformer2DModel", "diffusion_pytorch_model.safetensors"), ("vae", "AutoencoderDC", "diffusion_pytorch_model.safetensors"),
            ("text_encoder", "Gemma2Model", "model.safetensors"),
        })
        {
            var component = components[name]!;
            Assert.Equal(cls, (string?)component["class"]);
            var header = SafetensorsHeader.Read(Path.Combine(_dir, name, file));
            Assert.Equal(header.Tensors.Count, (long)component["tensors"]!);
            Assert.Equal(header.Tensors.Values.Sum(t => t.ElementCount), (long)component["parameters"]!);
        }
        Assert.Equal("GemmaTokenizerFast", (string?)components["tokenizer"]!["class"]);
        Assert.Equal("DPMSolverMultistepScheduler", (string?)components["scheduler"]!["class"]);
    }
}
