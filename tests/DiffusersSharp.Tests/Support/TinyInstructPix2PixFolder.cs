using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines.StableDiffusion;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// An InstructPix2Pix pipeline folder (model_index.json StableDiffusionInstructPix2PixPipeline, as
/// timbrooks/instruct-pix2pix) written for tests: tiny-sd15 with Euler ancestral and the 8-channel UNet of fixture
/// local-diffusers/instruct-pix2pix (tiny-sd15's weights, that fixture's conv_in).
/// </summary>
public static class TinyInstructPix2PixFolder
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
            j["_class_name"] = StableDiffusionInstructPix2PixPipeline.PipelineClass;
            j["scheduler"] = new JsonArray("diffusers", "EulerAncestralDiscreteScheduler");
        });
        Rewrite(Path.Combine("scheduler", "scheduler_config.json"), j => j["_class_name"] = "EulerAncestralDiscreteScheduler");
        Rewrite(Path.Combine("unet", "config.json"), j => j["in_channels"] = 8);
        string weights = Path.Combine(dir, "unet", "diffusion_pytorch_model.safetensors");
        Dictionary<string, Tensor> state;
        using (var file = SafetensorsFile.Open(weights)) state = file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k).clone());
        state["conv_in.weight"] = Fixtures.Expected("local-diffusers/instruct-pix2pix/expected.safetensors")["in.unet8.conv_in.weight"];
        SafetensorsWriter.Save(weights, state);
    }
}
