using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.CogView4;

/// <summary>
/// The loaded components of a CogView4 pipeline folder (model_index.json <c>CogView4Pipeline</c>; e.g.
/// THUDM/CogView4-6B): the CogView4 transformer, the 16-channel VAE, the GLM-4 text encoder (its second-to-last hidden
/// states are the prompt embeddings) with its tokenizer, and the FlowMatchEulerDiscreteScheduler config. Freed when the
/// creator and the last pipeline using them are done.
/// </summary>
/// <remarks>CogView4's prompt encoding is not built yet (<see cref="Models.TextEncoders.GlmModel"/> is; GLM-4's tokenizer is not): load with <see cref="PipelineLoadOptions.LoadTextEncoders"/> false
/// and pass prompt embeddings (GLM-4's second-to-last hidden states, as diffusers' encode_prompt makes them).</remarks>
public sealed class CogView4Components : PipelineComponents
{
    /// <summary>model_index.json's class of CogView4.</summary>
    public const string CogView4PipelineClass = "CogView4Pipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass == CogView4PipelineClass;

    /// <summary>The CogView4 transformer.</summary>
    public required CogView4Transformer2DModel Transformer { get; init; }

    /// <summary>The 16-channel VAE (the pipeline divides latents by its scaling factor only).</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>Loads the transformer, VAE and scheduler of a diffusers CogView4 pipeline folder, or of a hub repo id
    /// (downloaded into the hub cache first). <see cref="PipelineLoadOptions.LoadTextEncoders"/> must be false (the GLM-4
    /// prompt encoding is not built yet): the pipeline then takes prompt embeddings.</summary>
    /// <exception cref="NotSupportedException"><see cref="PipelineLoadOptions.LoadTextEncoders"/> is true.</exception>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a CogView4 pipeline, lacks a component, or its parts do not
    /// fit together.</exception>
    public static CogView4Components FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.LoadTextEncoders)
            throw new NotSupportedException("CogView4's prompt encoding is not built yet (GLM-4's tokenizer is missing): load without text encoders (LoadTextEncoders = false) and pass prompt embeddings.");
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        string[] required = ["transformer", "vae", "scheduler"];
        var (folder, _) = OpenPipelineFolder(model, options, "CogView4", IsSupportedPipeline, CogView4PipelineClass, required, skipUnused: true, cancellationToken);
        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            using (new FlowMatchEulerDiscreteScheduler(schedulerConfig)) { } // check it before any weights load
            var components = new CogView4Components
            {
                Transformer = loader.Load("transformer", () => CogView4Transformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                SchedulerConfig = schedulerConfig,
                Device = device,
                Dtype = options.Dtype,
                LoadMilliseconds = loader.LoadMilliseconds,
            };
            CheckFit(components.Transformer, components.Vae);
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
            return components;
        }
        catch
        {
            loader.DisposeLoaded();
            throw;
        }
    }

    /// <summary>Throws unless the VAE's latents are what the transformer takes (latent channels = in_channels).</summary>
    /// <exception cref="InvalidDataException">They do not fit, with both numbers.</exception>
    public static void CheckFit(CogView4Transformer2DModel transformer, AutoencoderKL vae)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(vae);
        if (vae.Config.LatentChannels != transformer.Config.InChannels)
            throw new InvalidDataException($"The VAE gives {vae.Config.LatentChannels} latent channels but the CogView4 transformer takes {transformer.Config.InChannels}.");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a CogView4 LoRA
    /// (<c>CogView4LoraLoaderMixin</c>: the transformer only), diffusers' own layout only (<c>transformer.*</c> lora_A / lora_B
    /// pairs, optional lora_B biases and adapter metadata; see <see cref="Loaders.LoraWeights.LoadCogView4"/>); checked before
    /// any weight changes, undone by <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a CogView4 transformer LoRA in a layout diffusers reads (keys
    /// outside <c>transformer.</c>, <c>.alpha</c> tensors and DoRA files among them).</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules, as in another family's LoRA,
    /// or other sizes), or the scale is not finite.</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseCogView4(path, Transformer, scale, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae (no text encoder here yet).
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() => TextEncoderTransformerVae(null, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae);
}
