using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.PixArt;

/// <summary>
/// The loaded components of a PixArt pipeline folder (model_index.json <c>PixArtSigmaPipeline</c> or
/// <c>PixArtAlphaPipeline</c>): the PixArt transformer, the 4-channel (SDXL) VAE, the T5 encoder and its tokenizer, and the
/// scheduler config (DPM-Solver++ for the released models; <see cref="SwappableSchedulerComponents.UseScheduler(string)"/>
/// swaps it, as <c>pipe.scheduler = X.from_config(pipe.scheduler.config)</c>). Freed when the creator and the last pipeline using them are done.
/// </summary>
public sealed class PixArtComponents : SwappableSchedulerComponents
{
    /// <summary>model_index.json's class of the PixArt-Σ models.</summary>
    public const string SigmaPipelineClass = "PixArtSigmaPipeline";

    /// <summary>model_index.json's class of the PixArt-α models.</summary>
    public const string AlphaPipelineClass = "PixArtAlphaPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a PixArt pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass is SigmaPipelineClass or AlphaPipelineClass;

    /// <summary>The folder's model_index.json class (<see cref="SigmaPipelineClass"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = SigmaPipelineClass;

    /// <summary>The PixArt transformer.</summary>
    public required PixArtTransformer2DModel Transformer { get; init; }

    /// <summary>The VAE (PixArt uses SDXL's: 4 latent channels, scaling factor 0.13025).</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>The T5 encoder, or null for components that only take prompt embeddings.</summary>
    public T5EncoderModel? TextEncoder { get; init; }

    /// <summary>The T5 tokenizer (null exactly when <see cref="TextEncoder"/> is).</summary>
    public T5Tokenizer? Tokenizer { get; init; }

    /// <summary>Loads every component of a diffusers PixArt pipeline folder, or of a hub repo id (downloaded into the hub cache first).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a PixArt pipeline or lacks a component.</exception>
    public static PixArtComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        var (folder, index) = OpenPipelineFolder(model, options, "PixArt", IsSupportedPipeline, $"{SigmaPipelineClass} or {AlphaPipelineClass}",
            ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"], skipUnused: false, cancellationToken);
        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = SchedulerConfigText.Parse(SchedulerConfigText.Read(Sub("scheduler")));
            using (DiffusionSchedulers.FromConfig(DiffusionSchedulers.EffectiveConfig(schedulerConfig))) { } // check it before any weights load
            var components = new PixArtComponents
            {
                Tokenizer = loader.Keep(T5Tokenizer.FromFolder(Sub("tokenizer"))),
                TextEncoder = loader.Load("text_encoder", () => T5EncoderModel.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant)),
                Transformer = loader.Load("transformer", () => PixArtTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
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

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae.
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
