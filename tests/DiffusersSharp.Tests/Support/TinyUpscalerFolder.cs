using System.Text.Json.Nodes;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// An x4 upscaler folder written for tests (model_index.json StableDiffusionUpscalePipeline, as
/// stabilityai/stable-diffusion-x4-upscaler): fixture local-diffusers/sd-upscale's model (UNet, VAE, DDIM scheduler, DDPM
/// low-resolution scheduler, max_noise_level 350), whose model_index.json names no text encoder, with tiny-sd15's CLIP
/// text encoder and tokenizer (32 wide, the UNet's cross_attention_dim) added.
/// </summary>
public static class TinyUpscalerFolder
{
    /// <summary>Writes the folder at <paramref name="dir"/>.</summary>
    public static void Write(string dir)
    {
        Copy(Fixtures.Path("local-diffusers/sd-upscale/model"), dir);
        Copy(Fixtures.Path("tiny-sd15/model/text_encoder"), Path.Combine(dir, "text_encoder"));
        Copy(Fixtures.Path("tiny-sd15/model/tokenizer"), Path.Combine(dir, "tokenizer"));
        string index = Path.Combine(dir, "model_index.json");
        var json = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        json["text_encoder"] = new JsonArray("transformers", "CLIPTextModel");
        json["tokenizer"] = new JsonArray("transformers", "CLIPTokenizer");
        File.WriteAllText(index, json.ToJsonString());
    }

    /// <summary>Copies every file under <paramref name="source"/> to the same place under <paramref name="target"/>.</summary>
    internal static void Copy(string source, string target)
    {
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string to = Path.Combine(target, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
    }
}
