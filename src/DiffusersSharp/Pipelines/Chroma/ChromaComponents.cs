using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Chroma;

/// <summary>
/// The loaded components of a Chroma pipeline folder (model_index.json <c>ChromaPipeline</c> or
/// <c>ChromaImg2ImgPipeline</c>; lodestones/Chroma1-HD, Chroma1-Base): the Chroma transformer, FLUX's 16-channel VAE, T5
/// v1.1 XXL (no CLIP) with its tokenizer, and the FlowMatchEulerDiscreteScheduler config. Freed when the creator and the
/// last pipeline using them are done.
/// </summary>
public sealed class ChromaComponents : PipelineComponents
{
    /// <summary>model_index.json's class of Chroma1-HD / Chroma1-Base.</summary>
    public const string PipelineClassName = "ChromaPipeline";

    /// <summary>model_index.json's class of a folder saved from diffusers' image-to-image pipeline (the same parts).</summary>
    public const string Img2ImgPipelineClassName = "ChromaImg2ImgPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a Chroma pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass is PipelineClassName or Img2ImgPipelineClassName;

    /// <summary>The folder's model_index.json class (<see cref="PipelineClassName"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = PipelineClassName;

    /// <summary>The Chroma transformer.</summary>
    public required ChromaTransformer2DModel Transformer { get; init; }

    /// <summary>The 16-channel VAE (scaling and shift factors from its config).</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>The T5 encoder, or null for components that only take prompt embeddings (diffusers' <c>text_encoder=None</c>).</summary>
    public T5EncoderModel? TextEncoder { get; init; }

    /// <summary>The T5 tokenizer (null with <see cref="TextEncoder"/>).</summary>
    public T5Tokenizer? Tokenizer { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>
    /// Loads every component of a diffusers Chroma pipeline folder, or of a hub repo id (downloaded into the hub cache
    /// first). With <see cref="PipelineLoadOptions.LoadTextEncoders"/> false, T5 and its tokenizer are left out: the
    /// pipelines then take prompt embeddings with their attention masks only.
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a Chroma pipeline or lacks a component.</exception>
    public static ChromaComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        var (folder, index) = OpenPipelineFolder(model, options, "Chroma", IsSupportedPipeline, $"{PipelineClassName} or {Img2ImgPipelineClassName}",
            ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"], skipUnused: false, cancellationToken);
        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            var components = new ChromaComponents
            {
                Tokenizer = options.LoadTextEncoders ? loader.Keep(T5Tokenizer.FromFolder(Sub("tokenizer"))) : null,
                TextEncoder = options.LoadTextEncoders ? loader.Load("text_encoder", () => T5EncoderModel.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant)) : null,
                Transformer = loader.Load("transformer", () => ChromaTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                SchedulerConfig = schedulerConfig,
                PipelineClass = index.ClassName,
                Device = device,
                Dtype = options.Dtype,
                LoadMilliseconds = loader.LoadMilliseconds,
            };
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
            return components;
        }
        catch
        {
            loader.DisposeLoaded();
            throw;
        }
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a Chroma LoRA in diffusers' own
    /// layout (<c>transformer.*</c> lora_A / lora_B pairs, optional alphas, lora_B biases and adapter metadata; Chroma's
    /// loader is FLUX's), the approximator's layers included; checked before any weight changes, undone by
    /// <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers. FLUX's original layouts (kohya,
    /// BFL, XLabs) name modulation layers Chroma does not have, and are refused.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Chroma transformer LoRA in diffusers' layout.</exception>
    /// <exception cref="ArgumentException">A part does not fit the transformer (missing modules or other sizes).</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseAll(path,
        new Dictionary<string, nn.Module?> { ["transformer"] = Transformer }, scale, kohya: false, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->image_encoder->transformer->vae (no image encoder here).
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
