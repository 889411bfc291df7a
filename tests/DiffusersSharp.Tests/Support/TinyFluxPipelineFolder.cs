using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using TorchSharp;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// A tiny Flux pipeline folder in diffusers' layout, written for tests (there is no diffusers Flux fixture): the tiny-sd3
/// fixture's CLIP-L tokenizer, T5 (encoder and tokenizer) and 16-channel VAE, a CLIPTextModel with random weights on the
/// fixture's CLIP-L config, and a random 2 + 2 block Flux transformer with guidance embedding.
/// </summary>
public static class TinyFluxPipelineFolder
{
    /// <summary>FLUX.1-dev's scheduler config (dynamic shifting).</summary>
    public const string SchedulerConfig = """
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096,
         "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": true}
        """;

    /// <summary>The tiny transformer config as config.json.</summary>
    public const string TransformerConfig = """
        {"_class_name": "FluxTransformer2DModel", "num_layers": 2, "num_single_layers": 2, "attention_head_dim": 16,
         "num_attention_heads": 2, "joint_attention_dim": 96, "pooled_projection_dim": 32, "guidance_embeds": true,
         "axes_dims_rope": [4, 6, 6], "in_channels": 64, "patch_size": 1, "out_channels": null}
        """;

    /// <summary>
    /// Writes the folder under <paramref name="dir"/> with weights drawn from <paramref name="seed"/>; model_index.json
    /// names <paramref name="pipelineClass"/>, and the transformer takes <paramref name="inChannels"/> (FluxFillPipeline: 384,
    /// with out_channels 64).
    /// </summary>
    public static void Write(string dir, long seed = 0, string pipelineClass = "FluxPipeline", int inChannels = 64)
    {
        string transformerConfig = TransformerConfig.Replace("\"in_channels\": 64", $"\"in_channels\": {inChannels}")
            .Replace("\"out_channels\": null", inChannels == 64 ? "\"out_channels\": null" : "\"out_channels\": 64");
        string sd3 = Fixtures.TinySd3Model;
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Path.Combine(sd3, from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("tokenizer", "tokenizer");
        Copy("tokenizer_3", "tokenizer_2");
        Copy("text_encoder_3", "text_encoder_2");
        Copy("vae", "vae");

        Directory.CreateDirectory(Path.Combine(dir, "text_encoder"));
        string clipJson = File.ReadAllText(Path.Combine(sd3, "text_encoder", "config.json")).Replace("CLIPTextModelWithProjection", "CLIPTextModel");
        File.WriteAllText(Path.Combine(dir, "text_encoder", "config.json"), clipJson);
        torch.manual_seed(seed);
        using (var clip = new CLIPTextModel(ConfigJson.Parse<CLIPTextConfig>(clipJson)))
            SafetensorsWriter.Save(Path.Combine(dir, "text_encoder", "model.safetensors"), clip.state_dict());

        Directory.CreateDirectory(Path.Combine(dir, "transformer"));
        File.WriteAllText(Path.Combine(dir, "transformer", "config.json"), transformerConfig);
        torch.manual_seed(seed + 1);
        using (var transformer = new FluxTransformer2DModel(ConfigJson.Parse<FluxTransformer2DModelConfig>(transformerConfig)))
            SafetensorsWriter.Save(Path.Combine(dir, "transformer", "diffusion_pytorch_model.safetensors"), transformer.state_dict());

        Directory.CreateDirectory(Path.Combine(dir, "scheduler"));
        File.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), SchedulerConfig);
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "PIPELINE_CLASS", "_diffusers_version": "0.35.0",
             "feature_extractor": [null, null], "image_encoder": [null, null],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
            """.Replace("PIPELINE_CLASS", pipelineClass));
    }
}
