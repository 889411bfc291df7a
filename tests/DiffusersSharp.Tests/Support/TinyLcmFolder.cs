using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines.StableDiffusion;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// A latent consistency model folder (model_index.json LatentConsistencyModelPipeline, as SimianLuo/LCM_Dreamshaper_v7)
/// written for tests: tiny-sd15 with the LCMScheduler and the time_cond_proj_dim 32 UNet of fixture local-diffusers/lcm
/// (tiny-sd15's weights, that fixture's cond_proj).
/// </summary>
public static class TinyLcmFolder
{
    /// <summary>Writes the folder at <paramref name="dir"/>.</summary>
    public static void Write(string dir)
    {
        string source = Fixtures.Path("tiny-sd15/model");
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
            j["_class_name"] = LatentConsistencyModelPipeline.PipelineClass;
            j["scheduler"] = new JsonArray("diffusers", "LCMScheduler");
        });
        Rewrite(Path.Combine("scheduler", "scheduler_config.json"), j => j["_class_name"] = "LCMScheduler");
        Rewrite(Path.Combine("unet", "config.json"), j => j["time_cond_proj_dim"] = 32);
        string weights = Path.Combine(dir, "unet", "diffusion_pytorch_model.safetensors");
        Dictionary<string, Tensor> state;
        using (var file = SafetensorsFile.Open(weights)) state = file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k).clone());
        state["time_embedding.cond_proj.weight"] = Fixtures.Expected("local-diffusers/lcm/expected.safetensors")["in.cond_proj.weight"];
        SafetensorsWriter.Save(weights, state);
    }
}
