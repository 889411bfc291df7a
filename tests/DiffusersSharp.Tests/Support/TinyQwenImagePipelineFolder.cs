using System.Text.Json.Nodes;
using DiffusersSharp.Benchmarks;
using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Writes a whole tiny Qwen-Image pipeline folder in the diffusers layout, text side included: fixture
/// local-diffusers/qwenimage's transformer, VAE and scheduler, the qwen3 fixture's small Qwen2-format tokenizer, and a
/// tiny Qwen2.5-VL text encoder (16 wide, as the transformer's joint_attention_dim) with seeded random weights, saved as
/// <c>Qwen2_5_VLForConditionalGeneration</c> checkpoints are (config at the top level or under text_config; the language
/// model under <c>model.</c> or <c>model.language_model.</c>, beside a vision tensor and an lm_head that are not read).
/// Not a parity fixture: the tests that use it compare the command line and the web UI with the library.
/// </summary>
public static class TinyQwenImagePipelineFolder
{
    /// <summary>The tiny text encoder's config (the tokenizer has 704 ids).</summary>
    public static Qwen2_5_VLTextConfig TextConfig { get; } = new()
    {
        VocabSize = 704, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 2, NumKeyValueHeads = 1,
    };

    /// <summary>Writes the folder to <paramref name="dir"/>; <paramref name="newLayout"/> writes transformers 4.52+'s layout.</summary>
    public static void Write(string dir, bool newLayout = false, string pipelineClass = "QwenImagePipeline")
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("local-diffusers/qwenimage/transformer", "transformer");
        Copy("local-diffusers/qwenimage/vae", "vae");
        Copy("local-diffusers/qwenimage/scheduler", "scheduler");
        Copy("local-diffusers/qwen3/tokenizer", "tokenizer");
        WriteTextEncoder(Path.Combine(dir, "text_encoder"), newLayout);
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "PIPELINE_CLASS", "_diffusers_version": "0.39.0",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
             "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "QwenImageTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKLQwenImage"]}
            """.Replace("PIPELINE_CLASS", pipelineClass));
    }

    /// <summary>Writes the tiny text encoder (seeded weights) to <paramref name="dir"/>.</summary>
    public static void WriteTextEncoder(string dir, bool newLayout = false)
    {
        Directory.CreateDirectory(dir);
        var c = TextConfig;
        var text = new JsonObject
        {
            ["vocab_size"] = c.VocabSize, ["hidden_size"] = c.HiddenSize, ["intermediate_size"] = c.IntermediateSize,
            ["num_hidden_layers"] = c.NumHiddenLayers, ["num_attention_heads"] = c.NumAttentionHeads, ["num_key_value_heads"] = c.NumKeyValueHeads,
            ["hidden_act"] = "silu", ["rms_norm_eps"] = 1e-6, ["rope_theta"] = 1000000.0,
            ["rope_scaling"] = new JsonObject { ["mrope_section"] = new JsonArray(1, 1, 2), ["rope_type"] = "default", ["type"] = "default" },
        };
        var config = newLayout
            ? new JsonObject { ["architectures"] = new JsonArray("Qwen2_5_VLForConditionalGeneration"), ["model_type"] = "qwen2_5_vl", ["text_config"] = text }
            : (JsonObject)text.DeepClone();
        if (!newLayout)
        {
            config["architectures"] = new JsonArray("Qwen2_5_VLForConditionalGeneration");
            config["vision_config"] = new JsonObject { ["depth"] = 1, ["hidden_size"] = 16 };
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());

        using var model = new Qwen2_5_VLTextModel(c, new Device(DeviceType.META));
        RandomWeights.Fill(model, CPU, 0.3, new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(20261128));
        string prefix = newLayout ? "model.language_model." : "model.";
        var tensors = model.state_dict().ToDictionary(kv => prefix + kv.Key, kv => kv.Value);
        // What the text model leaves unread: the vision tower and the language-model head.
        tensors[newLayout ? "model.visual.patch_embed.proj.weight" : "visual.patch_embed.proj.weight"] = ones([16, 3, 2, 14, 14]);
        tensors["lm_head.weight"] = zeros(c.VocabSize, c.HiddenSize);
        SafetensorsWriter.Save(Path.Combine(dir, "model.safetensors"), tensors);
    }
}
