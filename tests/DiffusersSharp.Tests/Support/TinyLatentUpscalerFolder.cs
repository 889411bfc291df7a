using System.Text.Json.Nodes;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// A latent x2 upscaler folder written for tests (model_index.json StableDiffusionLatentUpscalePipeline, as
/// stabilityai/sd-x2-latent-upscaler): fixture local-diffusers/sd-latent-upscale's model (K-UNet, Euler scheduler), whose
/// model_index.json names no text encoder and no VAE folder of its own, with tiny-sd15's VAE, CLIP text encoder and
/// tokenizer (32 wide: the K-UNet's cross_attention_dim and the pooled part of its time_cond_proj_dim) added.
/// </summary>
public static class TinyLatentUpscalerFolder
{
    /// <summary>Writes the folder at <paramref name="dir"/>.</summary>
    public static void Write(string dir)
    {
        TinyUpscalerFolder.Copy(Fixtures.Path("local-diffusers/sd-latent-upscale/model"), dir);
        foreach (string part in new[] { "vae", "text_encoder", "tokenizer" })
            TinyUpscalerFolder.Copy(Fixtures.Path($"tiny-sd15/model/{part}"), Path.Combine(dir, part));
        string index = Path.Combine(dir, "model_index.json");
        var json = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        json["text_encoder"] = new JsonArray("transformers", "CLIPTextModel");
        json["tokenizer"] = new JsonArray("transformers", "CLIPTokenizer");
        File.WriteAllText(index, json.ToJsonString());
    }
}
