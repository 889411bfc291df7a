namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a tiny PixArt pipeline folder in the diffusers layout: the tiny PixArt-Σ (or α) transformer and the scheduler
/// of fixture local-diffusers/pixart, tiny-sdxl's VAE (4 latent channels) and tiny-sd3's T5 and its tokenizer (d_model 96,
/// the transformers' caption_channels), with a model_index.json naming <c>PixArtSigmaPipeline</c> or <c>PixArtAlphaPipeline</c>.
/// </summary>
public static class TinyPixArtPipelineFolder
{
    /// <summary>Writes the folder to <paramref name="dir"/>; <paramref name="alpha"/> picks PixArt-α's transformer and class.</summary>
    public static void Write(string dir, bool alpha = false)
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy($"local-diffusers/pixart/{(alpha ? "alpha" : "sigma")}/transformer", "transformer");
        Copy("local-diffusers/pixart/scheduler", "scheduler");
        Copy("tiny-sdxl/model/vae", "vae");
        Copy("tiny-sd3/model/text_encoder_3", "text_encoder");
        Copy("tiny-sd3/model/tokenizer_3", "tokenizer");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "PIPELINE_CLASS", "_diffusers_version": "0.36.0",
             "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
             "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "PixArtTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
            """.Replace("PIPELINE_CLASS", alpha ? "PixArtAlphaPipeline" : "PixArtSigmaPipeline"));
    }
}
