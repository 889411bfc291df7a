using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// The configs of a Flux.1 pipeline, for random-weight benchmarks. Default run, as diffusers' docs run the two models:
/// FLUX.1-dev (guidance embedding) 1024x1024, 50 steps, guidance 3.5, 512 T5 tokens; FLUX.1-schnell 1024x1024, 4 steps,
/// no guidance, 256 T5 tokens.
/// </summary>
/// <param name="Name">The preset name or the folder the configs came from.</param>
/// <param name="Transformer">The Flux transformer config.</param>
/// <param name="Vae">The 16-channel VAE config.</param>
/// <param name="TextEncoder">CLIP-L (CLIPTextModel: pooled output only).</param>
/// <param name="TextEncoder2">T5 v1.1 XXL.</param>
/// <param name="Scheduler">The scheduler config.</param>
public sealed record FluxPipelineConfigs(string Name, FluxTransformer2DModelConfig Transformer, AutoencoderKLConfig Vae,
    CLIPTextConfig TextEncoder, T5Config TextEncoder2, FlowMatchEulerDiscreteSchedulerConfig Scheduler) : ModelConfigs(Name)
{
    /// <summary>The name of the FLUX.1-schnell preset.</summary>
    public const string Schnell = "flux.1-schnell";

    /// <summary>The name of the FLUX.1-dev preset.</summary>
    public const string Dev = "flux.1-dev";

    /// <inheritdoc />
    public override string PipelineClass => "FluxPipeline";

    /// <summary>Whether the transformer embeds the guidance scale (FLUX.1-dev); FLUX.1-schnell does not.</summary>
    public bool GuidanceEmbeds => Transformer.GuidanceEmbeds;

    /// <summary>Default steps: 50 with a guidance embedding (dev), else 4 (schnell).</summary>
    public int DefaultSteps => GuidanceEmbeds ? 50 : 4;

    /// <summary>Default guidance: 3.5 with a guidance embedding, else 0 (not used).</summary>
    public double DefaultGuidance => GuidanceEmbeds ? 3.5 : 0.0;

    /// <summary>Default T5 tokens: 512 with a guidance embedding (dev), else 256 (schnell's limit).</summary>
    public int DefaultMaxSequenceLength => GuidanceEmbeds ? 512 : 256;

    // black-forest-labs/FLUX.1-dev's vae/config.json (FLUX.1-schnell's is the same).
    private const string FluxVae = """
        {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
         "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "in_channels": 3, "out_channels": 3,
         "latent_channels": 16, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.3611,
         "shift_factor": 0.1159, "use_quant_conv": false, "use_post_quant_conv": false, "force_upcast": true, "mid_block_add_attention": true}
        """;

    private static FluxPipelineConfigs Preset(string name, bool dev) => new(name,
        new FluxTransformer2DModelConfig { GuidanceEmbeds = dev }, // the constructor defaults are FLUX.1's sizes
        ConfigJson.Parse<AutoencoderKLConfig>(FluxVae, name),
        UNetPipelineConfigs.StableDiffusion15.TextEncoder!, // openai/clip-vit-large-patch14, as SD 1.5's
        PipelineConfigs.StableDiffusion35Medium.TextEncoder3!, // google/t5-v1_1-xxl, as SD3's
        new FlowMatchEulerDiscreteSchedulerConfig
        {
            NumTrainTimesteps = 1000, Shift = dev ? 3.0 : 1.0, UseDynamicShifting = dev, BaseShift = 0.5, MaxShift = 1.15,
            BaseImageSeqLen = 256, MaxImageSeqLen = 4096,
        });

    /// <summary>FLUX.1-schnell at full size (transformer 11.89 B parameters).</summary>
    public static FluxPipelineConfigs FluxSchnell { get; } = Preset(Schnell, dev: false);

    /// <summary>FLUX.1-dev at full size (transformer 11.90 B parameters, guidance embedding).</summary>
    public static FluxPipelineConfigs FluxDev { get; } = Preset(Dev, dev: true);

    /// <summary>Reads the configs of a Flux pipeline folder (its weights are not read).</summary>
    public static FluxPipelineConfigs FromFolder(string folder)
    {
        string Sub(params string[] parts) => Path.Combine([folder, .. parts]);
        return new FluxPipelineConfigs(Path.GetFullPath(folder),
            ConfigJson.Read<FluxTransformer2DModelConfig>(Sub("transformer", "config.json")),
            ConfigJson.Read<AutoencoderKLConfig>(Sub("vae", "config.json")),
            ConfigJson.Read<CLIPTextConfig>(Sub("text_encoder", "config.json")),
            ConfigJson.Read<T5Config>(Sub("text_encoder_2", "config.json")),
            ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Sub("scheduler", "scheduler_config.json")));
    }
}
