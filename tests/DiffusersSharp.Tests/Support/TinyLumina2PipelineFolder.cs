namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a whole tiny Lumina-Image 2.0 pipeline folder in the diffusers layout, text side included, from fixtures only:
/// local-diffusers/lumina2's transformer and scheduler, tiny-sd3's VAE, the gemma-tokenizer fixture's tokenizer and
/// local-diffusers/sana-prompt's tiny Gemma2 (width 32, the transformer's cap_feat_dim). Not a parity fixture: the tests
/// that use it compare the command line and the web UI with the library.
/// </summary>
public static class TinyLumina2PipelineFolder
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
        Copy("local-diffusers/lumina2/transformer", "transformer");
        Copy("local-diffusers/lumina2/scheduler", "scheduler");
        Copy("tiny-sd3/model/vae", "vae");
        Copy("local-diffusers/gemma-tokenizer/tokenizer", "tokenizer");
        Copy("local-diffusers/sana-prompt/text_encoder", "text_encoder");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "Lumina2Pipeline", "_diffusers_version": "0.39.0",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Gemma2Model"],
             "tokenizer": ["transformers", "GemmaTokenizerFast"], "transformer": ["diffusers", "Lumina2Transformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
            """);
    }
}
