using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.ZImage;

/// <summary>
/// The loaded components of a Z-Image pipeline folder (model_index.json <c>ZImagePipeline</c> or
/// <c>ZImageImg2ImgPipeline</c>; e.g. Tongyi-MAI/Z-Image-Turbo): the Z-Image transformer, the 16-channel Flux-style VAE
/// and the FlowMatchEulerDiscreteScheduler config. Freed when the creator and the last pipeline using them are done.
/// </summary>
/// <remarks>
/// The folder's <c>text_encoder</c> (transformers' Qwen3Model) and <c>tokenizer</c> (Qwen2Tokenizer) are not loaded yet:
/// a hub download leaves them out, and the pipelines take prompt embeddings only (diffusers' <c>prompt_embeds</c> /
/// <c>negative_prompt_embeds</c> lists, as with <c>text_encoder=None</c>); a prompt string is refused with a clear error
/// before any compute. The encoder plugs in at one place, <see cref="ZImagePipelineBase"/>'s <c>EncodePrompt</c>.
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

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>Loads the transformer, VAE and scheduler config of a diffusers Z-Image pipeline folder, or of a hub repo id
    /// (downloaded into the hub cache first; without the text encoder, see the remarks).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a Z-Image pipeline or lacks a component.</exception>
    public static ZImageComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        string folder = Hub.ModelSource.Resolve(model, options.HubOptions, options.DownloadProgress, cancellationToken);
        var index = ModelIndex.Read(folder);
        if (!IsSupportedPipeline(index.ClassName))
            throw new InvalidDataException($"{folder}: model_index.json names {index.ClassName}, not {ZImagePipelineClass} or {ZImageImg2ImgPipelineClass}.");
        foreach (var name in new[] { "transformer", "vae", "scheduler" })
            if (!index.Components.TryGetValue(name, out var spec) || spec.IsEmpty)
                throw new InvalidDataException($"{folder}: model_index.json has no '{name}' component; a Z-Image pipeline needs it.");
        foreach (var (name, spec) in index.Components)
            if (!spec.IsEmpty && !Hub.HubFileSelector.IsUnused(name, index.ClassName)) ModelRegistry.KindOf(name, spec.ClassName!);

        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            using (new FlowMatchEulerDiscreteScheduler(schedulerConfig)) { } // check it before any weights load
            var components = new ZImageComponents
            {
                Transformer = loader.Load("transformer", () => ZImageTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                SchedulerConfig = schedulerConfig,
                PipelineClass = index.ClassName,
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
    /// <exception cref="ArgumentException">They do not fit, with both numbers.</exception>
    public static void CheckFit(ZImageTransformer2DModel transformer, AutoencoderKL vae)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(vae);
        if (vae.Config.LatentChannels != transformer.Config.InChannels)
            throw new ArgumentException($"The VAE gives {vae.Config.LatentChannels} latent channels but the Z-Image transformer takes {transformer.Config.InChannels}.");
    }

    /// <inheritdoc />
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() =>
        // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae (no text encoder loaded yet).
        new Dictionary<string, nn.Module> { ["transformer"] = Transformer, ["vae"] = Vae };

    /// <inheritdoc />
    protected override void FreeModels()
    {
        Transformer.Dispose();
        Vae.Dispose();
    }
}
