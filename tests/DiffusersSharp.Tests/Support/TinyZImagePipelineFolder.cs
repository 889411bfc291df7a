namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a whole tiny Z-Image pipeline folder in the diffusers layout, text side included, as
/// tools/reference/z_image_prompt.py assembled it for diffusers: the transformer of fixture local-diffusers/z-image-prompt
/// (cap_feat_dim 64), local-diffusers/z-image's scheduler (Z-Image-Turbo's), tiny-sd3's VAE, and the qwen3 fixture's tiny
/// Qwen3 text encoder (hidden size 64, saved as Qwen3ForCausalLM writes it) and Qwen2 tokenizer, with a model_index.json
/// naming Z-Image-Turbo's classes.
/// </summary>
public static class TinyZImagePipelineFolder
{
    /// <summary>Writes the folder to <paramref name="dir"/>; <paramref name="pipelineClass"/> is model_index.json's class.</summary>
    public static void Write(string dir, string pipelineClass = "ZImagePipeline")
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("local-diffusers/z-image-prompt/transformer", "transformer");
        Copy("local-diffusers/z-image/scheduler", "scheduler");
        Copy("tiny-sd3/model/vae", "vae");
        Copy("local-diffusers/qwen3/text_encoder", "text_encoder");
        Copy("local-diffusers/qwen3/tokenizer", "tokenizer");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "PIPELINE_CLASS", "_diffusers_version": "0.36.0",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3Model"],
             "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "ZImageTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
            """.Replace("PIPELINE_CLASS", pipelineClass));
    }
}
