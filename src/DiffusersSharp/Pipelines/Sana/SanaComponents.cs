using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// The loaded components of a Sana pipeline folder (model_index.json <c>SanaPipeline</c>, e.g.
/// Efficient-Large-Model/Sana_1600M_1024px_diffusers): the Sana transformer, the deep-compression autoencoder
/// (AutoencoderDC, 32x down), the Gemma-2 text encoder and its tokenizer, and the scheduler config
/// (DPMSolverMultistepScheduler with flow sigmas for the released models; FlowMatchEulerDiscreteScheduler runs too).
/// Freed when the creator and the last pipeline using them are done.
/// </summary>
public sealed class SanaComponents : PipelineComponents
{
    /// <summary>model_index.json's class of the Sana text-to-image models.</summary>
    public const string SanaPipelineClass = "SanaPipeline";

    /// <summary>model_index.json's class of the SANA-Sprint models.</summary>
    public const string SanaSprintPipelineClass = "SanaSprintPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass is SanaPipelineClass or SanaSprintPipelineClass;

    private JsonObject _schedulerConfig = new();

    /// <summary>The folder's model_index.json class (<see cref="SanaPipelineClass"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = SanaPipelineClass;

    /// <summary>The Sana transformer.</summary>
    public required SanaTransformer2DModel Transformer { get; init; }

    /// <summary>The deep-compression autoencoder.</summary>
    public required AutoencoderDC Vae { get; init; }

    /// <summary>The Gemma-2 text encoder, or null for components that only take prompt embeddings.</summary>
    public Gemma2Model? TextEncoder { get; init; }

    /// <summary>The Gemma tokenizer (null exactly when <see cref="TextEncoder"/> is).</summary>
    public GemmaTokenizer? Tokenizer { get; init; }

    /// <summary>
    /// The scheduler config every call builds its scheduler from, with its <c>_class_name</c>:
    /// DPMSolverMultistepScheduler (the released models: flow sigmas, flow_prediction) or FlowMatchEulerDiscreteScheduler.
    /// Checked when set.
    /// </summary>
    /// <exception cref="ArgumentException">(init) Another class or an invalid config.</exception>
    public JsonObject SchedulerConfig
    {
        get => _schedulerConfig;
        init
        {
            ArgumentNullException.ThrowIfNull(value);
            using (SanaScheduler.Create(value)) { }
            _schedulerConfig = (JsonObject)value.DeepClone();
        }
    }

    /// <summary>A fresh scheduler for one call (schedulers hold per-call state).</summary>
    internal SanaScheduler CreateScheduler() => SanaScheduler.Create(SchedulerConfig);

    /// <summary>Loads every component of a diffusers Sana pipeline folder, or of a hub repo id (downloaded into the hub
    /// cache first). Without <see cref="PipelineLoadOptions.LoadTextEncoders"/> the Gemma encoder and tokenizer are
    /// skipped (prompt embeddings only).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a Sana pipeline or lacks a component.</exception>
    public static SanaComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        string[] required = options.LoadTextEncoders
            ? ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"] : ["transformer", "vae", "scheduler"];
        var (folder, index) = OpenPipelineFolder(model, options, "Sana", IsSupportedPipeline, $"{SanaPipelineClass} or {SanaSprintPipelineClass}", required, skipUnused: true, cancellationToken);
        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = SchedulerConfigText.Parse(SchedulerConfigText.Read(Sub("scheduler")));
            using (SanaScheduler.Create(schedulerConfig)) { } // check it before any weights load
            var components = new SanaComponents
            {
                Tokenizer = options.LoadTextEncoders ? loader.Keep(GemmaTokenizer.FromFolder(Sub("tokenizer"))) : null,
                TextEncoder = options.LoadTextEncoders
                    ? loader.Load("text_encoder", () => Gemma2Model.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant))
                    : null,
                Transformer = loader.Load("transformer", () => SanaTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderDC.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
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

    /// <summary>The VAE's spatial scale factor: diffusers' <c>2 ** (len(encoder_block_out_channels) - 1)</c> (32 for Sana's DC-AE).</summary>
    public int VaeScaleFactor => Vae.VaeScaleFactor;

    /// <summary>Throws when the parts cannot run together (latent channels, caption width).</summary>
    /// <exception cref="InvalidDataException">The transformer's latent channels differ from the VAE's, or its caption
    /// width from the text encoder's hidden size.</exception>
    internal static void CheckFit(SanaTransformer2DModel transformer, AutoencoderDC vae, Gemma2Model? textEncoder)
    {
        if (transformer.Config.InChannels != vae.Config.LatentChannels)
            throw new InvalidDataException($"The transformer takes {transformer.Config.InChannels} latent channels, the VAE makes {vae.Config.LatentChannels}.");
        if (textEncoder is not null && textEncoder.Config.HiddenSize != transformer.Config.CaptionChannels)
            throw new InvalidDataException($"The text encoder's hidden size is {textEncoder.Config.HiddenSize}, the transformer's caption_channels {transformer.Config.CaptionChannels}.");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a Sana LoRA
    /// (<c>SanaLoraLoaderMixin</c>: the transformer only), diffusers' own layout only (<c>transformer.*</c> lora_A / lora_B pairs, a conv's pair 4-D, optional lora_B biases and adapter metadata; see <see cref="Loaders.LoraWeights.LoadSana"/>); checked before any weight changes, undone by
    /// <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Sana transformer LoRA in a layout diffusers reads (keys outside
    /// <c>transformer.</c>, <c>.alpha</c> tensors and DoRA files among them).</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules, as in another family's LoRA,
    /// or other sizes), or the scale is not finite.</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseSana(path, Transformer, scale, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae.
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
