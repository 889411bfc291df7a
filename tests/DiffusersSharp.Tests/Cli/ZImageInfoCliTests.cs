using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>diffusers info</c> on Z-Image folders: the tiny one (sizes from the safetensors headers) and Z-Image-Turbo's layout
/// with configs only (the full-size transformer built on the meta device: diffusers' counts). The Qwen3 text encoder
/// and its tokenizer are not loaded yet, so info leaves them out, as downloads do.
/// </summary>
public sealed class ZImageInfoCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("zimage-info").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void DescribesTheTinyFolderFromItsHeaders()
    {
        LocalDiffusersZImage.WriteFolder(_dir);
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _dir);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("ZImagePipeline", (string?)json["pipeline"]);
        var components = json["components"]!.AsObject();
        Assert.Equal(["scheduler", "transformer", "vae"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        var transformer = components["transformer"]!;
        Assert.Equal("ZImageTransformer2DModel", (string?)transformer["class"]);
        Assert.Equal("safetensors", (string?)transformer["source"]);
        var header = SafetensorsHeader.Read(Path.Combine(_dir, "transformer", "diffusion_pytorch_model.safetensors"));
        Assert.Equal(header.Tensors.Count, (long)transformer["tensors"]!);
        Assert.Equal(header.Tensors.Values.Sum(t => t.ElementCount), (long)transformer["parameters"]!);
    }

    [Fact]
    public void CountsTheFullSizeTurboTransformerFromItsConfigAlone()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/z-image/counts.json")))!["transformer.z-image-turbo"]!;
        Directory.CreateDirectory(Path.Combine(_dir, "transformer"));
        var config = counts["config"]!.DeepClone().AsObject();
        config["_class_name"] = "ZImageTransformer2DModel";
        File.WriteAllText(Path.Combine(_dir, "transformer", "config.json"), config.ToJsonString());
        File.WriteAllText(Path.Combine(_dir, "model_index.json"), """
            {"_class_name": "ZImagePipeline", "text_encoder": ["transformers", "Qwen3Model"], "tokenizer": ["transformers", "Qwen2Tokenizer"],
             "transformer": ["diffusers", "ZImageTransformer2DModel"]}
            """);
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _dir);
        Assert.True(code == 0, stderr);
        var components = JsonNode.Parse(stdout)!["components"]!.AsObject();
        Assert.Equal(["transformer"], components.Select(c => c.Key));
        var transformer = components["transformer"]!;
        Assert.Equal("config", (string?)transformer["source"]);
        Assert.Equal((long)counts["elements"]!, (long)transformer["parameters"]!);
        Assert.Equal((long)counts["tensors"]!, (long)transformer["tensors"]!);
    }
}
