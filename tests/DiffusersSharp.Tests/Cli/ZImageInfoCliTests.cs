using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>diffusers info</c> on Z-Image folders: the whole tiny one (sizes from the safetensors headers, the Qwen3 text encoder
/// single-file and sharded with an index, as Z-Image-Turbo's is) and Z-Image-Turbo's layout with configs only (the
/// full-size transformer and Qwen3-4B text encoder built on the meta device: diffusers' and transformers' counts).
/// </summary>
public sealed class ZImageInfoCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("zimage-info").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private JsonObject Components()
    {
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _dir);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("ZImagePipeline", (string?)json["pipeline"]);
        return json["components"]!.AsObject();
    }

    private static void AssertHeaderCounts(JsonNode component, IEnumerable<string> files)
    {
        var headers = files.Select(SafetensorsHeader.Read).ToList();
        Assert.Equal("safetensors", (string?)component["source"]);
        Assert.Equal(headers.Sum(h => h.Tensors.Count), (long)component["tensors"]!);
        Assert.Equal(headers.Sum(h => h.Tensors.Values.Sum(t => t.ElementCount)), (long)component["parameters"]!);
    }

    [Fact]
    public void DescribesTheTinyFolderFromItsHeaders()
    {
        TinyZImagePipelineFolder.Write(_dir);
        var components = Components();
        Assert.Equal(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        Assert.Equal("ZImageTransformer2DModel", (string?)components["transformer"]!["class"]);
        AssertHeaderCounts(components["transformer"]!, [Path.Combine(_dir, "transformer", "diffusion_pytorch_model.safetensors")]);
        var encoder = components["text_encoder"]!;
        Assert.Equal("Qwen3Model", (string?)encoder["class"]);
        AssertHeaderCounts(encoder, [Path.Combine(_dir, "text_encoder", "model.safetensors")]);
        Assert.Equal(3 * 11 + 2, (long)encoder["tensors"]!); // 11 tensors per layer, the embedding and the final norm
        var tokenizer = components["tokenizer"]!;
        Assert.Equal(("Qwen2Tokenizer", "tokenizer", "files"), ((string?)tokenizer["class"], (string?)tokenizer["kind"], (string?)tokenizer["source"]));
        Assert.Contains("tokenizer.json", tokenizer["files"]!.AsArray().Select(f => (string?)f));
    }

    [Fact]
    public void CountsAShardedTextEncoderThroughItsIndex()
    {
        TinyZImagePipelineFolder.Write(_dir);
        string folder = Path.Combine(_dir, "text_encoder"), single = Path.Combine(folder, "model.safetensors");
        // Two shards and their index, as Z-Image-Turbo's text_encoder has three (model-0000K-of-00003.safetensors).
        using (var file = SafetensorsFile.Open(single))
        {
            var names = file.Tensors.Keys.Order(StringComparer.Ordinal).ToList();
            var map = new JsonObject();
            for (int shard = 0; shard < 2; shard++)
            {
                string name = $"model-0000{shard + 1}-of-00002.safetensors";
                var part = names.Where((_, i) => i % 2 == shard).ToList();
                var tensors = part.ToDictionary(n => n, n => file.Read(n));
                SafetensorsWriter.Save(Path.Combine(folder, name), tensors);
                foreach (var t in tensors.Values) t.Dispose();
                foreach (var n in part) map[n] = name;
            }
            File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
        }
        string[] shards = [Path.Combine(folder, "model-00001-of-00002.safetensors"), Path.Combine(folder, "model-00002-of-00002.safetensors")];
        var expected = SafetensorsHeader.Read(single);
        File.Delete(single);
        var encoder = Components()["text_encoder"]!;
        AssertHeaderCounts(encoder, shards);
        Assert.Equal(expected.Tensors.Count, (long)encoder["tensors"]!);
        Assert.Equal(expected.Tensors.Values.Sum(t => t.ElementCount), (long)encoder["parameters"]!);
        Assert.Equal(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], encoder["files"]!.AsArray().Select(f => (string?)f));
    }

    [Fact]
    public void CountsTheFullSizeTurboModelsFromTheirConfigsAlone()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/z-image/counts.json")))!["transformer.z-image-turbo"]!;
        var encoderCounts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/qwen3/counts.json")))!;
        Directory.CreateDirectory(Path.Combine(_dir, "transformer"));
        var config = counts["config"]!.DeepClone().AsObject();
        config["_class_name"] = "ZImageTransformer2DModel";
        File.WriteAllText(Path.Combine(_dir, "transformer", "config.json"), config.ToJsonString());
        Directory.CreateDirectory(Path.Combine(_dir, "text_encoder"));
        File.WriteAllText(Path.Combine(_dir, "text_encoder", "config.json"), encoderCounts["config"]!.ToJsonString()); // Z-Image-Turbo's
        File.WriteAllText(Path.Combine(_dir, "model_index.json"), """
            {"_class_name": "ZImagePipeline", "text_encoder": ["transformers", "Qwen3Model"], "transformer": ["diffusers", "ZImageTransformer2DModel"]}
            """);
        var components = Components();
        Assert.Equal(["text_encoder", "transformer"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        var transformer = components["transformer"]!;
        Assert.Equal("config", (string?)transformer["source"]);
        Assert.Equal((long)counts["elements"]!, (long)transformer["parameters"]!);
        Assert.Equal((long)counts["tensors"]!, (long)transformer["tensors"]!);
        // transformers' Qwen3Model of Qwen3-4B on the meta device: 398 tensors, 4,022,468,096 elements.
        var encoder = components["text_encoder"]!;
        Assert.Equal(("config", "Qwen3Model"), ((string?)encoder["source"], (string?)encoder["class"]));
        Assert.Equal((long)encoderCounts["elements"]!, (long)encoder["parameters"]!);
        Assert.Equal((long)encoderCounts["tensors"]!, (long)encoder["tensors"]!);
        Assert.Equal(["bfloat16"], encoder["dtypes"]!.AsArray().Select(d => (string?)d));
    }
}
