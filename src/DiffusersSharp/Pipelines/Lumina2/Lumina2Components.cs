using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Lumina2;

/// <summary>
/// The loaded components of a Lumina-Image 2.0 pipeline folder (model_index.json <c>Lumina2Pipeline</c>, or its old name
/// <c>Lumina2Text2ImgPipeline</c>; e.g. Alpha-VLLM/Lumina-Image-2.0): the Lumina2 transformer, the 16-channel Flux-style
/// VAE, the Gemma-2 text encoder (its second-to-last hidden states are the prompt embeddings) with its tokenizer, and the
/// FlowMatchEulerDiscreteScheduler config. Freed when the creator and the last pipeline using them are done.
/// </summary>
/// <remarks>Without the text encoder (<see cref="PipelineLoadOptions.LoadTextEncoders"/> false, or components built
/// without one) the pipeline takes prompt embeddings with their masks only.</remarks>
public sealed class Lumina2Components : PipelineComponents
{
    /// <summary>model_index.json's class of Lumina-Image 2.0.</summary>
    public const string Lumina2PipelineClass = "Lumina2Pipeline";

    /// <summary>The class's deprecated name, which older folders may carry (the same pipeline).</summary>
    public const string Lumina2Text2ImgPipelineClass = "Lumina2Text2ImgPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass is Lumina2PipelineClass or Lumina2Text2ImgPipelineClass;

    /// <summary>The folder's model_index.json class (<see cref="Lumina2PipelineClass"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = Lumina2PipelineClass;

    /// <summary>The Lumina2 transformer.</summary>
    public required Lumina2Transformer2DModel Transformer { get; init; }

    /// <summary>The 16-channel VAE (scaling and shift factors from its config).</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>The Gemma-2 text encoder, or null for components that only take prompt embeddings.</summary>
    public Gemma2Model? TextEncoder { get; init; }

    /// <summary>The Gemma tokenizer (null exactly when <see cref="TextEncoder"/> is).</summary>
    public GemmaTokenizer? Tokenizer { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>Loads every component of a diffusers Lumina-Image 2.0 pipeline folder, or of a hub repo id (downloaded
    /// into the hub cache first). Without <see cref="PipelineLoadOptions.LoadTextEncoders"/> the Gemma encoder and
    /// tokenizer are skipped (prompt embeddings only).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a Lumina-Image 2.0 pipeline, lacks a component, or its
    /// parts do not fit together.</exception>
    public static Lumina2Components FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        string[] required = options.LoadTextEncoders
            ? ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"] : ["transformer", "vae", "scheduler"];
        var (folder, index) = OpenPipelineFolder(model, options, "Lumina-Image 2.0", IsSupportedPipeline, Lumina2PipelineClass, required, skipUnused: true, cancellationToken);
        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            using (new FlowMatchEulerDiscreteScheduler(schedulerConfig)) { } // check it before any weights load
            var components = new Lumina2Components
            {
                Tokenizer = options.LoadTextEncoders ? loader.Keep(GemmaTokenizer.FromFolder(Sub("tokenizer"))) : null,
                TextEncoder = options.LoadTextEncoders
                    ? loader.Load("text_encoder", () => Gemma2Model.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant))
                    : null,
                Transformer = loader.Load("transformer", () => Lumina2Transformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
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

    /// <summary>Throws unless the VAE's latents are what the transformer takes (latent channels = in_channels) and, when
    /// given, the text encoder's width is the transformer's caption width (hidden_size = cap_feat_dim).</summary>
    /// <exception cref="InvalidDataException">They do not fit, with both numbers.</exception>
    public static void CheckFit(Lumina2Transformer2DModel transformer, AutoencoderKL vae, Gemma2Model? textEncoder = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(vae);
        if (vae.Config.LatentChannels != transformer.Config.InChannels)
            throw new InvalidDataException($"The VAE gives {vae.Config.LatentChannels} latent channels but the Lumina2 transformer takes {transformer.Config.InChannels}.");
        if (textEncoder is not null && textEncoder.Config.HiddenSize != transformer.Config.CapFeatDim)
            throw new InvalidDataException($"The text encoder gives {textEncoder.Config.HiddenSize}-wide embeddings but the Lumina2 transformer takes {transformer.Config.CapFeatDim} (cap_feat_dim).");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a Lumina2 LoRA
    /// (<c>Lumina2LoraLoaderMixin</c>: the transformer only), in diffusers' own layout (<c>transformer.*</c> lora_A / lora_B pairs, optional lora_B biases and adapter metadata) or Lumina's original training layout that its converter reads (<c>diffusion_model.layers.0.attention.qkv.lora_A.weight</c>, ...; see <see cref="Loaders.LoraWeights.LoadLumina2"/>); checked before any weight changes, undone by
    /// <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Lumina2 transformer LoRA in a layout diffusers reads (keys outside
    /// <c>transformer.</c>, <c>.alpha</c> tensors and DoRA files among them).</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules, as in another family's LoRA,
    /// or other sizes), or the scale is not finite.</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseLumina2(path, Transformer, scale, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae.
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
