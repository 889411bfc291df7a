using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// A pipeline folder written for tests from a tiny fixture model (tiny-sd15, tiny-sdxl): its model_index.json and
/// scheduler renamed, its UNet config changed, and one UNet weight replaced (a fixture's drawn tensor), the rest the
/// fixture model's files.
/// </summary>
public static class TinyModelVariant
{
    /// <summary>Writes the folder at <paramref name="dir"/> from fixture model <paramref name="fixtureModel"/> (e.g.
    /// "tiny-sd15/model"): model_index.json names <paramref name="pipelineClass"/> and <paramref name="schedulerClass"/>,
    /// <paramref name="unetConfig"/> edits unet/config.json, and the UNet weight <paramref name="weightName"/> becomes
    /// <paramref name="weight"/>.</summary>
    public static void Write(string dir, string fixtureModel, string pipelineClass, string schedulerClass, Action<JsonObject> unetConfig,
        string weightName, Tensor weight)
    {
        string source = Fixtures.Path(fixtureModel);
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(dir, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        void Rewrite(string file, Action<JsonObject> change)
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, file)))!.AsObject();
            change(json);
            File.WriteAllText(Path.Combine(dir, file), json.ToJsonString());
        }
        Rewrite("model_index.json", j =>
        {
            j["_class_name"] = pipelineClass;
            j["scheduler"] = new JsonArray("diffusers", schedulerClass);
        });
        Rewrite(Path.Combine("scheduler", "scheduler_config.json"), j => j["_class_name"] = schedulerClass);
        Rewrite(Path.Combine("unet", "config.json"), unetConfig);
        string weights = Path.Combine(dir, "unet", "diffusion_pytorch_model.safetensors");
        Dictionary<string, Tensor> state;
        using (var file = SafetensorsFile.Open(weights)) state = file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k).clone());
        state[weightName] = weight;
        SafetensorsWriter.Save(weights, state);
    }
}
