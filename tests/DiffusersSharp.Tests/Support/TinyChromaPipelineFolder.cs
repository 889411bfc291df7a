namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a tiny Chroma pipeline folder in the diffusers layout: the tiny Chroma transformer and the scheduler of fixture
/// local-diffusers/chroma, tiny-sd3's VAE (16 latent channels with a shift factor, as FLUX's) and tiny-sd3's T5 and its
/// tokenizer (d_model 96, the transformer's joint_attention_dim), with a model_index.json naming <c>ChromaPipeline</c>.
/// </summary>
public static class TinyChromaPipelineFolder
{
    /// <summary>Writes the folder to <paramref name="dir"/>; <paramref name="pipelineClass"/> is model_index.json's class.</summary>
    public static void Write(string dir, string pipelineClass = "ChromaPipeline")
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("local-diffusers/chroma/transformer", "transformer");
        Copy("local-diffusers/chroma/scheduler", "scheduler");
        Copy("tiny-sd3/model/vae", "vae");
        Copy("tiny-sd3/model/text_encoder_3", "text_encoder");
        Copy("tiny-sd3/model/tokenizer_3", "tokenizer");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "PIPELINE_CLASS", "_diffusers_version": "0.36.0",
             "feature_extractor": [null, null], "image_encoder": [null, null],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
             "tokenizer": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "ChromaTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
            """.Replace("PIPELINE_CLASS", pipelineClass));
    }
}
