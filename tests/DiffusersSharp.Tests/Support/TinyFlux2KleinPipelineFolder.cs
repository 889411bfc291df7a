using DiffusersSharp.Benchmarks;
using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a whole tiny FLUX.2 [klein] pipeline folder in the diffusers layout, text side included: fixture
/// local-diffusers/flux2-klein's transformer, VAE and scheduler, the qwen3 fixture's small Qwen2-format tokenizer, and a
/// tiny Qwen3 text encoder saved as a <c>Qwen3ForCausalLM</c> checkpoint (<c>model.</c> keys and an <c>lm_head</c> that is
/// not read), with seeded random weights: 27 layers of width 8, so the pipeline's default hidden-state layers 9, 18 and 27
/// stack to the transformer's 24-wide text input. Not a parity fixture: the tests that use it compare the command line and
/// the web UI with the library.
/// </summary>
public static class TinyFlux2KleinPipelineFolder
{
    /// <summary>The tiny text encoder's config (the tokenizer has 704 ids).</summary>
    public static Qwen3Config TextConfig { get; } = new()
    {
        VocabSize = 704, HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 27, NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 4,
        MaxPositionEmbeddings = 1024, RopeTheta = 1000000.0, TieWordEmbeddings = false,
    };

    /// <summary>Writes the folder to <paramref name="dir"/> with model_index.json's <c>is_distilled</c>.</summary>
    public static void Write(string dir, bool distilled = false)
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("local-diffusers/flux2-klein/transformer", "transformer");
        Copy("local-diffusers/flux2-klein/vae", "vae");
        Copy("local-diffusers/flux2-klein/scheduler", "scheduler");
        Copy("local-diffusers/qwen3/tokenizer", "tokenizer");
        WriteTextEncoder(Path.Combine(dir, "text_encoder"));
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "Flux2KleinPipeline", "_diffusers_version": "0.39.0", "is_distilled": DISTILLED,
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3ForCausalLM"],
             "tokenizer": ["transformers", "Qwen2TokenizerFast"], "transformer": ["diffusers", "Flux2Transformer2DModel"],
             "vae": ["diffusers", "AutoencoderKLFlux2"]}
            """.Replace("DISTILLED", distilled ? "true" : "false"));
    }

    /// <summary>Writes the tiny text encoder (seeded weights) to <paramref name="dir"/>.</summary>
    public static void WriteTextEncoder(string dir)
    {
        Directory.CreateDirectory(dir);
        var c = TextConfig;
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": {{c.VocabSize}}, "hidden_size": {{c.HiddenSize}},
             "intermediate_size": {{c.IntermediateSize}}, "num_hidden_layers": {{c.NumHiddenLayers}}, "num_attention_heads": {{c.NumAttentionHeads}},
             "num_key_value_heads": {{c.NumKeyValueHeads}}, "head_dim": {{c.HeadDim}}, "hidden_act": "silu", "max_position_embeddings": {{c.MaxPositionEmbeddings}},
             "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false}
            """);
        using var model = new Qwen3Model(c, new Device(DeviceType.META));
        RandomWeights.Fill(model, CPU, 0.3, new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(20261128));
        var tensors = model.state_dict().ToDictionary(kv => "model." + kv.Key, kv => kv.Value);
        tensors["lm_head.weight"] = zeros(c.VocabSize, c.HiddenSize); // the causal LM's head, which the pipeline never reads
        SafetensorsWriter.Save(Path.Combine(dir, "model.safetensors"), tensors);
    }
}
