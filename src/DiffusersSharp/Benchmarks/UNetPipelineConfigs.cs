using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Schedulers;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// The configs of an SD 1.x / 2.x or SDXL pipeline (UNet2DConditionModel), for random-weight benchmarks. Default run:
/// diffusers' <c>__call__</c> defaults, as its docs use them: the UNet's sample size x 8 (512 for SD 1.5, 1024 for
/// SDXL), 50 steps, guidance 7.5 (SD) or 5.0 (SDXL).
/// </summary>
/// <param name="Name">The preset name or the folder the configs came from.</param>
/// <param name="IsXL">SDXL (StableDiffusionXLPipeline) rather than SD 1.x / 2.x.</param>
/// <param name="Unet">The UNet config.</param>
/// <param name="Vae">The 4-channel VAE config.</param>
/// <param name="TextEncoder">CLIP-L (CLIPTextModel; OpenCLIP-H for SD 2.x), or null (the SDXL refiner has none).</param>
/// <param name="TextEncoder2">SDXL's OpenCLIP-G (CLIPTextModelWithProjection), or null for SD 1.x / 2.x.</param>
/// <param name="Scheduler">The scheduler config with its <c>_class_name</c>.</param>
public sealed record UNetPipelineConfigs(string Name, bool IsXL, UNet2DConditionModelConfig Unet, AutoencoderKLConfig Vae,
    CLIPTextConfig? TextEncoder, CLIPTextConfig? TextEncoder2, JsonObject Scheduler) : ModelConfigs(Name)
{
    /// <summary>The name of the SDXL base 1.0 preset.</summary>
    public const string SdxlBase = "sdxl-base";

    /// <summary>The name of the Stable Diffusion 1.5 preset.</summary>
    public const string Sd15 = "sd1.5";

    /// <inheritdoc />
    public override string PipelineClass => IsXL ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline";

    /// <summary>The default image side: the UNet's sample size times the VAE's scale factor.</summary>
    public int DefaultSize => (Unet.SampleSize is { } s ? s.IsScalar ? s.Scalar : s.List![0] : IsXL ? 128 : 64) * Vae.VaeScaleFactor;

    /// <summary>The default guidance scale of the pipeline (diffusers': 5.0 for SDXL, 7.5 for SD).</summary>
    public double DefaultGuidance => IsXL ? 5.0 : 7.5;

    // The hub's config.json files of stabilityai/stable-diffusion-xl-base-1.0 and stable-diffusion-v1-5 (keys that equal
    // the defaults left out).
    private const string SdxlUnet = """
        {"addition_embed_type": "text_time", "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256,
         "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
         "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "in_channels": 4,
         "layers_per_block": 2, "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
         "transformer_layers_per_block": [1, 2, 10], "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
         "use_linear_projection": true}
        """;
    private const string Sd15Unet = """
        {"attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
         "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
         "in_channels": 4, "layers_per_block": 2, "out_channels": 4, "sample_size": 64,
         "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
        """;
    private const string Vae4 = """
        {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
         "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "in_channels": 3, "out_channels": 3,
         "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": SIZE, "scaling_factor": SCALE}
        """;
    private const string ClipL = """
        {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768,
         "hidden_act": "quick_gelu", "vocab_size": 49408, "max_position_embeddings": 77}
        """;
    private const string ClipG = """
        {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32, "projection_dim": 1280,
         "hidden_act": "gelu", "vocab_size": 49408, "max_position_embeddings": 77}
        """;
    private const string SdxlScheduler = """
        {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
         "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
         "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
         "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false}
        """;
    private const string Sd15Scheduler = """
        {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
         "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
         "steps_offset": 1, "trained_betas": null}
        """;

    /// <summary>SDXL base 1.0 at full size (UNet 2.57 B parameters, CLIP-L, OpenCLIP-G, VAE with scaling 0.13025, Euler).</summary>
    public static UNetPipelineConfigs StableDiffusionXLBase { get; } = new(SdxlBase, true,
        ConfigJson.Parse<UNet2DConditionModelConfig>(SdxlUnet, SdxlBase), ConfigJson.Parse<AutoencoderKLConfig>(Vae4.Replace("SIZE", "1024").Replace("SCALE", "0.13025"), SdxlBase),
        ConfigJson.Parse<CLIPTextConfig>(ClipL, SdxlBase), ConfigJson.Parse<CLIPTextConfig>(ClipG, SdxlBase), (JsonObject)JsonNode.Parse(SdxlScheduler)!);

    /// <summary>Stable Diffusion 1.5 at full size (UNet 860 M parameters, CLIP-L, VAE with scaling 0.18215, PNDM).</summary>
    public static UNetPipelineConfigs StableDiffusion15 { get; } = new(Sd15, false,
        ConfigJson.Parse<UNet2DConditionModelConfig>(Sd15Unet, Sd15), ConfigJson.Parse<AutoencoderKLConfig>(Vae4.Replace("SIZE", "512").Replace("SCALE", "0.18215"), Sd15),
        ConfigJson.Parse<CLIPTextConfig>(ClipL, Sd15), null, (JsonObject)JsonNode.Parse(Sd15Scheduler)!);

    /// <summary>Reads the configs of an SD 1.x / 2.x or SDXL pipeline folder (its weights are not read).</summary>
    public static UNetPipelineConfigs FromFolder(string folder)
    {
        var index = ModelIndex.Read(folder);
        bool xl = BenchmarkFamilies.Of(index.ClassName) == BenchmarkFamily.StableDiffusionXL;
        string Sub(params string[] parts) => Path.Combine([folder, .. parts]);
        bool Present(string name) => index.Components.TryGetValue(name, out var spec) && !spec.IsEmpty;
        var scheduler = SchedulerConfigText.Parse(SchedulerConfigText.Read(Sub("scheduler")));
        scheduler["_class_name"] = index.Components.TryGetValue("scheduler", out var s) && s.ClassName is { } c ? c
            : throw new InvalidDataException($"{folder}: model_index.json has no scheduler.");
        return new UNetPipelineConfigs(Path.GetFullPath(folder), xl,
            ConfigJson.Read<UNet2DConditionModelConfig>(Sub("unet", "config.json")),
            ConfigJson.Read<AutoencoderKLConfig>(Sub("vae", "config.json")),
            Present("text_encoder") ? ConfigJson.Read<CLIPTextConfig>(Sub("text_encoder", "config.json")) : null,
            xl && Present("text_encoder_2") ? ConfigJson.Read<CLIPTextConfig>(Sub("text_encoder_2", "config.json")) : null,
            scheduler);
    }
}
