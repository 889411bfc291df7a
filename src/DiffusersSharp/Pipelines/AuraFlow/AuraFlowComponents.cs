using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.AuraFlow;

/// <summary>
/// The loaded components of an AuraFlow pipeline folder (model_index.json <c>AuraFlowPipeline</c>; e.g.
/// fal/AuraFlow-v0.3): the AuraFlow transformer (MMDiT + DiT blocks), SDXL's 4-channel VAE, the UMT5 text encoder with
/// its tokenizer (the released folders carry a LlamaTokenizerFast; a T5 tokenizer loads too), and the
/// FlowMatchEulerDiscreteScheduler config. Freed when the creator and the last pipeline using them are done.
/// </summary>
/// <remarks>Without the text encoder (<see cref="PipelineLoadOptions.LoadTextEncoders"/> false, or components built
/// without one) the pipeline takes prompt embeddings only.</remarks>
public sealed class AuraFlowComponents : PipelineComponents
{
    /// <summary>model_index.json's class of AuraFlow.</summary>
    public const string AuraFlowPipelineClass = "AuraFlowPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass == AuraFlowPipelineClass;

    /// <summary>The AuraFlow transformer.</summary>
    public required AuraFlowTransformer2DModel Transformer { get; init; }

    /// <summary>The 4-channel VAE (SDXL's; decoded in float32 when it is float16 with force_upcast, as diffusers does).</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>The UMT5 text encoder, or null for components that only take prompt embeddings.</summary>
    public UMT5EncoderModel? TextEncoder { get; init; }

    /// <summary>The tokenizer (null exactly when <see cref="TextEncoder"/> is).</summary>
    public ITextTokenizer? Tokenizer { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>Loads every component of a diffusers AuraFlow pipeline folder, or of a hub repo id (downloaded into the hub
    /// cache first). Without <see cref="PipelineLoadOptions.LoadTextEncoders"/> the UMT5 encoder and tokenizer are
    /// skipped (prompt embeddings only).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not an AuraFlow pipeline, lacks a component, or its parts do not
    /// fit together.</exception>
    public static AuraFlowComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        string[] required = options.LoadTextEncoders
            ? ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"] : ["transformer", "vae", "scheduler"];
        var (folder, index) = OpenPipelineFolder(model, options, "AuraFlow", IsSupportedPipeline, AuraFlowPipelineClass, required, skipUnused: true, cancellationToken);
        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            using (new FlowMatchEulerDiscreteScheduler(schedulerConfig)) { } // check it before any weights load
            var components = new AuraFlowComponents
            {
                Tokenizer = options.LoadTextEncoders ? LoadTokenizer(Sub("tokenizer"), index.Components["tokenizer"].ClassName!) : null,
                TextEncoder = options.LoadTextEncoders
                    ? loader.Load("text_encoder", () => UMT5EncoderModel.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant))
                    : null,
                Transformer = loader.Load("transformer", () => AuraFlowTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                SchedulerConfig = schedulerConfig,
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

    /// <summary>The tokenizer model_index.json names: Llama's (the released AuraFlow folders) or T5's (diffusers' tests).</summary>
    /// <exception cref="InvalidDataException">Another tokenizer class.</exception>
    private static ITextTokenizer LoadTokenizer(string folder, string className) => className switch
    {
        "LlamaTokenizer" or "LlamaTokenizerFast" => LlamaTokenizer.FromFolder(folder),
        "T5Tokenizer" or "T5TokenizerFast" => T5Tokenizer.FromFolder(folder),
        _ => throw new InvalidDataException($"{folder}: an AuraFlow tokenizer of class {className} is not supported (LlamaTokenizer(Fast) or T5Tokenizer(Fast)."),
    };

    /// <summary>Throws unless the VAE's latents are what the transformer takes and, when given, the text encoder's width is
    /// the transformer's caption width (d_model = joint_attention_dim).</summary>
    /// <exception cref="InvalidDataException">They do not fit, with both numbers.</exception>
    public static void CheckFit(AuraFlowTransformer2DModel transformer, AutoencoderKL vae, UMT5EncoderModel? textEncoder = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(vae);
        if (vae.Config.LatentChannels != transformer.Config.InChannels)
            throw new InvalidDataException($"The VAE gives {vae.Config.LatentChannels} latent channels but the AuraFlow transformer takes {transformer.Config.InChannels}.");
        if (textEncoder is not null && textEncoder.Config.DModel != transformer.Config.JointAttentionDim)
            throw new InvalidDataException($"The text encoder gives {textEncoder.Config.DModel}-wide embeddings but the AuraFlow transformer takes {transformer.Config.JointAttentionDim} (joint_attention_dim).");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for an AuraFlow LoRA
    /// (<c>AuraFlowLoraLoaderMixin</c>: the transformer only), diffusers' own layout only (<c>transformer.*</c> lora_A / lora_B pairs, optional lora_B biases and adapter metadata; see <see cref="Loaders.LoraWeights.LoadAuraFlow"/>); checked before any weight changes, undone by
    /// <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not an AuraFlow transformer LoRA in a layout diffusers reads (keys outside
    /// <c>transformer.</c>, <c>.alpha</c> tensors and DoRA files among them).</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules, as in another family's LoRA,
    /// or other sizes), or the scale is not finite.</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseAuraFlow(path, Transformer, scale, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae.
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
