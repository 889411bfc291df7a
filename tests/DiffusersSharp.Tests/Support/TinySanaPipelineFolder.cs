using DiffusersSharp.Benchmarks;
using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a whole tiny Sana pipeline folder in the diffusers layout, text side included: fixture local-diffusers/sana's
/// transformer, AutoencoderDC and scheduler, the gemma-tokenizer fixture's small Gemma tokenizer, and a tiny Gemma2 text
/// encoder with seeded random weights whose width is the transformer's 24 caption channels. Not a parity fixture: the
/// tests that use it compare the command line and the web UI with the library.
/// </summary>
public static class TinySanaPipelineFolder
{
    private static string TokenizerFolder => Fixtures.Path("local-diffusers/gemma-tokenizer/tokenizer");

    /// <summary>The tiny text encoder's config (vocabulary: the tokenizer's).</summary>
    public static Gemma2Config TextConfig { get; } = new()
    {
        VocabSize = GemmaTokenizer.FromFolder(TokenizerFolder).VocabSize, HiddenSize = 24, IntermediateSize = 48, NumHiddenLayers = 2,
        NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 12, QueryPreAttnScalar = 12, SlidingWindow = 4096,
    };

    /// <summary>Writes the folder to <paramref name="dir"/>; with <paramref name="sprint"/> a SANA-Sprint one
    /// (local-diffusers/sana-sprint's transformer and SCMScheduler).</summary>
    public static void Write(string dir, bool sprint = false)
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        string family = sprint ? "local-diffusers/sana-sprint" : "local-diffusers/sana";
        Copy($"{family}/transformer", "transformer");
        Copy("local-diffusers/sana/vae", "vae");
        Copy($"{family}/scheduler", "scheduler");
        Copy("local-diffusers/gemma-tokenizer/tokenizer", "tokenizer");
        WriteTextEncoder(Path.Combine(dir, "text_encoder"));
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "PIPELINE", "_diffusers_version": "0.39.0",
             "scheduler": ["diffusers", "SCHEDULER"], "text_encoder": ["transformers", "Gemma2Model"],
             "tokenizer": ["transformers", "GemmaTokenizerFast"], "transformer": ["diffusers", "SanaTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderDC"]}
            """.Replace("PIPELINE", sprint ? "SanaSprintPipeline" : "SanaPipeline")
            .Replace("SCHEDULER", sprint ? "SCMScheduler" : "DPMSolverMultistepScheduler"));
    }

    /// <summary>Writes the tiny text encoder (seeded weights) to <paramref name="dir"/>.</summary>
    public static void WriteTextEncoder(string dir)
    {
        Directory.CreateDirectory(dir);
        var c = TextConfig;
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["Gemma2Model"], "model_type": "gemma2", "vocab_size": {{c.VocabSize}}, "hidden_size": {{c.HiddenSize}},
             "intermediate_size": {{c.IntermediateSize}}, "num_hidden_layers": {{c.NumHiddenLayers}}, "num_attention_heads": {{c.NumAttentionHeads}},
             "num_key_value_heads": {{c.NumKeyValueHeads}}, "head_dim": {{c.HeadDim}}, "hidden_activation": "gelu_pytorch_tanh",
             "max_position_embeddings": 8192, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "query_pre_attn_scalar": {{c.QueryPreAttnScalar}},
             "sliding_window": {{c.SlidingWindow}}, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "pad_token_id": 0}
            """);
        using var model = new Gemma2Model(c, new Device(DeviceType.META));
        RandomWeights.Fill(model, CPU, 0.3, new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(20261128));
        SafetensorsWriter.Save(Path.Combine(dir, "model.safetensors"), model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value));
    }
}
