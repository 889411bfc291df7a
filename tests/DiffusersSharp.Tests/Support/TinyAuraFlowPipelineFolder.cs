namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a whole tiny AuraFlow pipeline folder in the diffusers layout, text side included, from fixtures only:
/// local-diffusers/auraflow's transformer and scheduler, tiny-sdxl's VAE, and local-diffusers/auraflow-prompt's tiny UMT5
/// (width 32, the transformer's joint_attention_dim) with its left-padding Llama tokenizer. Not a parity fixture: the tests
/// that use it compare the command line and the web UI with the library.
/// </summary>
public static class TinyAuraFlowPipelineFolder
{
    /// <summary>Writes the folder to <paramref name="dir"/>.</summary>
    public static void Write(string dir)
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("local-diffusers/auraflow/transformer", "transformer");
        Copy("local-diffusers/auraflow/scheduler", "scheduler");
        Copy("tiny-sdxl/model/vae", "vae");
        Copy("local-diffusers/auraflow-prompt/tokenizer", "tokenizer");
        Copy("local-diffusers/auraflow-prompt/text_encoder", "text_encoder");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "AuraFlowPipeline", "_diffusers_version": "0.39.0",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "UMT5EncoderModel"],
             "tokenizer": ["transformers", "LlamaTokenizerFast"], "transformer": ["diffusers", "AuraFlowTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
            """);
    }
}
