using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.ZImage;

/// <summary>
/// The loaded components of a Z-Image pipeline folder (model_index.json <c>ZImagePipeline</c> or
/// <c>ZImageImg2ImgPipeline</c>; e.g. Tongyi-MAI/Z-Image-Turbo): the Z-Image transformer, the 16-channel Flux-style VAE,
/// the Qwen3 text encoder (transformers' <c>Qwen3Model</c>, Qwen3-4B) with its <c>Qwen2Tokenizer</c>, and the
/// FlowMatchEulerDiscreteScheduler config. Freed when the creator and the last pipeline using them are done.
/// </summary>
/// <remarks>
/// Without the text encoder (<see cref="PipelineLoadOptions.LoadTextEncoders"/> false, or components built without one:
/// diffusers' <c>text_encoder=None</c>) the pipelines take prompt embeddings only (diffusers' <c>prompt_embeds</c> /
/// <c>negative_prompt_embeds</c> lists); a prompt string is then refused with a clear error before any compute.
/// </remarks>
public sealed class ZImageComponents : PipelineComponents
{
    /// <summary>model_index.json's class of Z-Image and Z-Image-Turbo.</summary>
    public const string ZImagePipelineClass = "ZImagePipeline";

    /// <summary>model_index.json's class of diffusers' Z-Image image-to-image pipeline (the same components).</summary>
    public const string ZImageImg2ImgPipelineClass = "ZImageImg2ImgPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a Z-Image pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass is ZImagePipelineClass or ZImageImg2ImgPipelineClass;

    /// <summary>The folder's model_index.json class (<see cref="ZImagePipelineClass"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = ZImagePipelineClass;

    /// <summary>The Z-Image transformer.</summary>
    public required ZImageTransformer2DModel Transformer { get; init; }

    /// <summary>The 16-channel VAE (scaling and shift factors from its config).</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>The Qwen3 text encoder (its second-to-last hidden states are the prompt embeddings), or null for components
    /// that only take prompt embeddings (diffusers' <c>text_encoder=None</c>).</summary>
    public Qwen3Model? TextEncoder { get; init; }

    /// <summary>The Qwen2 tokenizer with Qwen3's chat template (null with <see cref="TextEncoder"/>).</summary>
    public Qwen2Tokenizer? Tokenizer { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>
    /// Loads every component of a diffusers Z-Image pipeline folder, or of a hub repo id (downloaded into the hub cache
    /// first). With <see cref="PipelineLoadOptions.LoadTextEncoders"/> false, the Qwen3 text encoder and its tokenizer are
    /// left out (and not downloaded): the pipelines then take prompt embeddings only. The text encoder's width is checked
    /// against the transformer's <c>cap_feat_dim</c> from their configs, before any weights load.
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a Z-Image pipeline, lacks a component, or its text encoder
    /// does not give the width the transformer takes.</exception>
    public static ZImageComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        string[] required = options.LoadTextEncoders
            ? ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"] : ["transformer", "vae", "scheduler"];
        var (folder, index) = OpenPipelineFolder(model, options, "Z-Image", IsSupportedPipeline, $"{ZImagePipelineClass} or {ZImageImg2ImgPipelineClass}",
            required, skipUnused: true, cancellationToken);
        if (options.LoadTextEncoders) CheckTextWidth(folder);

        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            using (new FlowMatchEulerDiscreteScheduler(schedulerConfig)) { } // check it before any weights load
            var components = new ZImageComponents
            {
                Tokenizer = options.LoadTextEncoders ? loader.Keep(Qwen2Tokenizer.FromFolder(Sub("tokenizer"))) : null,
                TextEncoder = options.LoadTextEncoders ? loader.Load("text_encoder", () => Qwen3Model.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant)) : null,
                Transformer = loader.Load("transformer", () => ZImageTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                SchedulerConfig = schedulerConfig,
                PipelineClass = index.ClassName,
                Device = device,
                Dtype = options.Dtype,
                LoadMilliseconds = loader.LoadMilliseconds,
            };
            CheckFit(components.Transformer, components.Vae, components.TextEncoder);
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
            return components;
        }
        catch
        {
            loader.DisposeLoaded();
            throw;
        }
    }

    /// <summary>The text encoder's hidden size against the transformer's cap_feat_dim, from the folder's configs (before any
    /// weights load: Qwen3-4B is 8 GB).</summary>
    private static void CheckTextWidth(string folder)
    {
        string te = Path.Combine(folder, "text_encoder", "config.json"), tf = Path.Combine(folder, "transformer", "config.json");
        if (!File.Exists(te) || !File.Exists(tf)) return; // the loads below say which file is missing
        int hidden = ConfigJson.Read<Qwen3Config>(te).HiddenSize, capFeatDim = ConfigJson.Read<ZImageTransformer2DModelConfig>(tf).CapFeatDim;
        if (hidden != capFeatDim)
            throw new InvalidDataException($"{folder}: the text encoder's hidden_size is {hidden} but the transformer's cap_feat_dim is {capFeatDim}; a Z-Image pipeline needs them equal.");
    }

    /// <summary>Throws unless the VAE's latents are what the transformer takes (latent channels = in_channels) and, when given,
    /// the text encoder's width is the transformer's caption width (hidden_size = cap_feat_dim).</summary>
    /// <exception cref="ArgumentException">They do not fit, with both numbers.</exception>
    public static void CheckFit(ZImageTransformer2DModel transformer, AutoencoderKL vae, Qwen3Model? textEncoder = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(vae);
        if (vae.Config.LatentChannels != transformer.Config.InChannels)
            throw new ArgumentException($"The VAE gives {vae.Config.LatentChannels} latent channels but the Z-Image transformer takes {transformer.Config.InChannels}.");
        if (textEncoder is not null && textEncoder.Config.HiddenSize != transformer.Config.CapFeatDim)
            throw new ArgumentException($"The text encoder gives {textEncoder.Config.HiddenSize}-wide embeddings but the Z-Image transformer takes {transformer.Config.CapFeatDim} (cap_feat_dim).");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a Z-Image LoRA
    /// (<c>ZImageLoraLoaderMixin</c>: the transformer only), in diffusers' own layout (<c>transformer.*</c> lora_A / lora_B
    /// pairs, optional lora_B biases and adapter metadata) or one its converter reads (<c>diffusion_model.</c> names,
    /// lora_down / lora_up / alpha triples, PEFT's <c>default.</c> adapter names; see
    /// <see cref="Loaders.LoraWeights.LoadZImage"/>); checked before any weight changes, undone by
    /// <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Z-Image transformer LoRA in a layout diffusers reads (kohya's
    /// <c>lora_unet_</c> names among them: diffusers v0.36 cannot load those).</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes).</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseZImage(path, Transformer, scale, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae.
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
