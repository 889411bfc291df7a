using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>
/// The loaded components of a Qwen-Image pipeline folder (model_index.json <c>QwenImagePipeline</c> or
/// <c>QwenImageImg2ImgPipeline</c> or <c>QwenImageInpaintPipeline</c>; e.g. Qwen/Qwen-Image): the Qwen-Image MMDiT, the causal 3-D VAE
/// (<c>AutoencoderKLQwenImage</c>), the text model of Qwen2.5-VL-7B-Instruct with its <c>Qwen2Tokenizer</c>, and the
/// FlowMatchEulerDiscreteScheduler config. Freed when the creator and the last pipeline using them are done.
/// </summary>
/// <remarks>
/// Without the text encoder (<see cref="PipelineLoadOptions.LoadTextEncoders"/> false, or components built without one:
/// diffusers' <c>text_encoder=None</c>) the pipelines take prompt embeddings only; a prompt string is then refused with a
/// clear error before any compute.
/// </remarks>
public sealed class QwenImageComponents : PipelineComponents
{
    /// <summary>model_index.json's class of Qwen-Image text-to-image.</summary>
    public const string QwenImagePipelineClass = "QwenImagePipeline";

    /// <summary>model_index.json's class of diffusers' Qwen-Image image-to-image pipeline (the same components).</summary>
    public const string QwenImageImg2ImgPipelineClass = "QwenImageImg2ImgPipeline";

    /// <summary>model_index.json's class of diffusers' Qwen-Image inpainting pipeline (the same components).</summary>
    public const string QwenImageInpaintPipelineClass = "QwenImageInpaintPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a Qwen-Image pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) =>
        pipelineClass is QwenImagePipelineClass or QwenImageImg2ImgPipelineClass or QwenImageInpaintPipelineClass;

    /// <summary>The folder's model_index.json class (<see cref="QwenImagePipelineClass"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = QwenImagePipelineClass;

    /// <summary>The Qwen-Image transformer.</summary>
    public required QwenImageTransformer2DModel Transformer { get; init; }

    /// <summary>The VAE (its latents_mean / latents_std normalise the latents).</summary>
    public required AutoencoderKLQwenImage Vae { get; init; }

    /// <summary>The Qwen2.5-VL text model (its last hidden states are the prompt embeddings), or null for components that
    /// only take prompt embeddings (diffusers' <c>text_encoder=None</c>).</summary>
    public Qwen2_5_VLTextModel? TextEncoder { get; init; }

    /// <summary>The Qwen2 tokenizer (null with <see cref="TextEncoder"/>).</summary>
    public Qwen2Tokenizer? Tokenizer { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>
    /// Loads every component of a diffusers Qwen-Image pipeline folder, or of a hub repo id (downloaded into the hub cache
    /// first). With <see cref="PipelineLoadOptions.LoadTextEncoders"/> false the text encoder and its tokenizer are left
    /// out (and not downloaded): the pipelines then take prompt embeddings only.
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a Qwen-Image pipeline or lacks a component.</exception>
    /// <exception cref="ArgumentException">The components do not fit each other (widths, latent channels).</exception>
    public static QwenImageComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? torch.CPU : device;
        string[] required = options.LoadTextEncoders
            ? ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"] : ["transformer", "vae", "scheduler"];
        var (folder, index) = OpenPipelineFolder(model, options, "Qwen-Image", IsSupportedPipeline,
            $"{QwenImagePipelineClass}, {QwenImageImg2ImgPipelineClass} or {QwenImageInpaintPipelineClass}", required, skipUnused: true, cancellationToken);

        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            using (new FlowMatchEulerDiscreteScheduler(schedulerConfig)) { } // check it before any weights load
            var components = new QwenImageComponents
            {
                Tokenizer = options.LoadTextEncoders ? loader.Keep(Qwen2Tokenizer.FromFolder(Sub("tokenizer"))) : null,
                TextEncoder = options.LoadTextEncoders ? loader.Load("text_encoder", () => Qwen2_5_VLTextModel.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant)) : null,
                Transformer = loader.Load("transformer", () => QwenImageTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKLQwenImage.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
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

    /// <summary>Throws unless the VAE's latents are what the transformer takes (4 × z_dim = in_channels, patch 2) and, when
    /// given, the text encoder's width is the transformer's text width (hidden_size = joint_attention_dim).</summary>
    /// <exception cref="ArgumentException">They do not fit, with both numbers.</exception>
    public static void CheckFit(QwenImageTransformer2DModel transformer, AutoencoderKLQwenImage vae, Qwen2_5_VLTextModel? textEncoder = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(vae);
        if (transformer.Config.PatchSize != 2)
            throw new ArgumentException($"The Qwen-Image pipelines pack 2x2 latent patches; this transformer's patch_size is {transformer.Config.PatchSize}.");
        if (4 * vae.Config.ZDim != transformer.Config.InChannels)
            throw new ArgumentException($"The VAE gives {vae.Config.ZDim} latent channels (x 4 packed: {4 * vae.Config.ZDim}) but the Qwen-Image transformer takes {transformer.Config.InChannels}.");
        var (mean, std) = (vae.Config.LatentsMean, vae.Config.LatentsStd);
        if (mean is null || mean.Length != vae.Config.ZDim || std is null || std.Length != vae.Config.ZDim)
            throw new ArgumentException($"The VAE's latents_mean and latents_std need z_dim = {vae.Config.ZDim} values each (the pipelines normalise every latent channel), got {mean?.Length ?? 0} and {std?.Length ?? 0}.");
        if (std.Any(s => !(s > 0) || double.IsInfinity(s)))
            throw new ArgumentException("The VAE's latents_std must be positive finite numbers.");
        if (transformer.Config.OutChannelsOrIn != vae.Config.ZDim)
            throw new ArgumentException($"The Qwen-Image transformer predicts {transformer.Config.OutChannelsOrIn} channels per patch position but the VAE decodes {vae.Config.ZDim}.");
        if (textEncoder is not null && textEncoder.Config.HiddenSize != transformer.Config.JointAttentionDim)
            throw new ArgumentException($"The text encoder gives {textEncoder.Config.HiddenSize}-wide embeddings but the Qwen-Image transformer takes {transformer.Config.JointAttentionDim} (joint_attention_dim).");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a Qwen-Image LoRA
    /// (<c>QwenImageLoraLoaderMixin</c>: the transformer only), in diffusers' own layout or one its converter reads
    /// (<c>diffusion_model.</c> names, lora_down / lora_up / alpha triples, kohya's <c>lora_unet_</c> names, PEFT's
    /// <c>default.</c> adapter names; see <see cref="Loaders.LoraWeights.LoadQwenImage"/>); checked before any weight
    /// changes, undone by <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Qwen-Image transformer LoRA in a layout diffusers reads.</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes).</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseQwenImage(path, Transformer, scale, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae.
    protected override IReadOnlyDictionary<string, torch.nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
