using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// The loaded components of a FLUX.2 [klein] pipeline folder (model_index.json <c>Flux2KleinPipeline</c> or <c>Flux2KleinKVPipeline</c>; e.g.
/// black-forest-labs/FLUX.2-klein-4B): the FLUX.2 transformer, the 32-channel VAE with its batch-norm latent statistics
/// (<c>AutoencoderKLFlux2</c>), the Qwen3 text encoder (<c>Qwen3ForCausalLM</c>, its hidden states only) with its
/// <c>Qwen2Tokenizer</c>, the FlowMatchEulerDiscreteScheduler config, and model_index.json's <c>is_distilled</c>. Freed
/// when the creator and the last pipeline using them are done.
/// </summary>
/// <remarks>
/// Without the text encoder (<see cref="PipelineLoadOptions.LoadTextEncoders"/> false, or components built without one:
/// diffusers' <c>text_encoder=None</c>) the pipeline takes prompt embeddings only; a prompt string, or CFG without
/// negative embeddings, is then refused with a clear error before any compute.
/// </remarks>
public sealed class Flux2KleinComponents : PipelineComponents
{
    /// <summary>model_index.json's class of FLUX.2 [klein].</summary>
    public const string Flux2KleinPipelineClass = "Flux2KleinPipeline";

    /// <summary>model_index.json's class of a FLUX.2 [klein] KV folder (diffusers' <c>Flux2KleinKVPipeline</c>: the same
    /// components, without <c>is_distilled</c> in its constructor's use).</summary>
    public const string Flux2KleinKVPipelineClass = "Flux2KleinKVPipeline";

    /// <summary>Whether <paramref name="pipelineClass"/> is a pipeline class these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => pipelineClass is Flux2KleinPipelineClass or Flux2KleinKVPipelineClass;

    /// <summary>The folder's model_index.json class (<see cref="Flux2KleinPipelineClass"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = Flux2KleinPipelineClass;

    /// <summary>The FLUX.2 transformer.</summary>
    public required Flux2Transformer2DModel Transformer { get; init; }

    /// <summary>The VAE (its batch-norm running statistics normalise the patchified latents).</summary>
    public required AutoencoderKLFlux2 Vae { get; init; }

    /// <summary>The Qwen3 text encoder (some of its hidden states, stacked, are the prompt embeddings), or null for
    /// components that only take prompt embeddings (diffusers' <c>text_encoder=None</c>).</summary>
    public Qwen3Model? TextEncoder { get; init; }

    /// <summary>The Qwen2 tokenizer with Qwen3's chat template (null with <see cref="TextEncoder"/>).</summary>
    public Qwen2Tokenizer? Tokenizer { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>model_index.json's <c>is_distilled</c> (false when absent, as diffusers' default): a step-distilled model
    /// runs without CFG whatever the guidance scale (FLUX.2-klein-4B / 9B); the "base" models use CFG.</summary>
    public bool IsDistilled { get; init; }

    /// <summary>
    /// Loads every component of a diffusers FLUX.2 [klein] pipeline folder, or of a hub repo id (downloaded into the hub
    /// cache first). With <see cref="PipelineLoadOptions.LoadTextEncoders"/> false the text encoder and its tokenizer are
    /// left out (and not downloaded): the pipeline then takes prompt embeddings only.
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a FLUX.2 [klein] pipeline or lacks a component.</exception>
    /// <exception cref="ArgumentException">The components do not fit each other (latent channels, text width).</exception>
    public static Flux2KleinComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? torch.CPU : device;
        string[] required = options.LoadTextEncoders
            ? ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"] : ["transformer", "vae", "scheduler"];
        var (folder, index) = OpenPipelineFolder(model, options, "FLUX.2 [klein]", IsSupportedPipeline, $"{Flux2KleinPipelineClass} or {Flux2KleinKVPipelineClass}",
            required, skipUnused: true, cancellationToken);
        bool distilled = ReadIsDistilled(Path.Combine(folder, "model_index.json"));

        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            using (new FlowMatchEulerDiscreteScheduler(schedulerConfig)) { } // check it before any weights load
            var components = new Flux2KleinComponents
            {
                Tokenizer = options.LoadTextEncoders ? loader.Keep(Qwen2Tokenizer.FromFolder(Sub("tokenizer"))) : null,
                TextEncoder = options.LoadTextEncoders
                    ? loader.Load("text_encoder", () => Qwen3Model.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant, skipLMHead: true))
                    : null,
                Transformer = loader.Load("transformer", () => Flux2Transformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKLFlux2.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                SchedulerConfig = schedulerConfig,
                PipelineClass = index.ClassName,
                IsDistilled = distilled,
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

    /// <summary>model_index.json's <c>is_distilled</c>: a JSON boolean, false when absent.</summary>
    private static bool ReadIsDistilled(string path)
    {
        JsonNode? value;
        try
        {
            value = (JsonNode.Parse(File.ReadAllText(path)) as JsonObject)?["is_distilled"];
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}");
        }
        if (value is null) return false;
        return value is JsonValue v && v.TryGetValue<bool>(out bool distilled)
            ? distilled
            : throw new InvalidDataException($"{path}: is_distilled must be true or false, got {value.ToJsonString()}.");
    }

    /// <summary>Throws unless the VAE's patchified latents are what the transformer takes and gives back (4 × latent_channels
    /// = in_channels = out_channels, the batch norm over those channels).</summary>
    /// <exception cref="ArgumentException">They do not fit, with both numbers.</exception>
    public static void CheckFit(Flux2Transformer2DModel transformer, AutoencoderKLFlux2 vae)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(vae);
        int patchified = 4 * vae.Config.LatentChannels;
        if (transformer.Config.InChannels != patchified)
            throw new ArgumentException($"The VAE gives {vae.Config.LatentChannels} latent channels (x 4 patchified: {patchified}) but the FLUX.2 transformer takes {transformer.Config.InChannels}.");
        if (transformer.Config.OutChannelsOrIn != patchified)
            throw new ArgumentException($"The FLUX.2 transformer predicts {transformer.Config.OutChannelsOrIn} channels but the VAE's patchified latents have {patchified}.");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a FLUX.2 LoRA
    /// (<c>Flux2LoraLoaderMixin</c>: the transformer only), in diffusers' own layout or one its converters read
    /// (ai-toolkit's <c>diffusion_model.double_blocks.0.img_attn.qkv</c> names with fused QKV, PEFT's
    /// <c>base_model.model.</c> prefix, kohya's <c>lora_unet_</c> names with alphas; see
    /// <see cref="Loaders.LoraWeights.LoadFlux2"/>); checked before any weight changes, undone by
    /// <see cref="PipelineComponents.UnfuseLora"/>. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a FLUX.2 transformer LoRA in a layout diffusers reads.</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes), or the scale is not finite.</exception>
    public int FuseLora(string path, double scale = 1.0) => Loaders.LoraWeights.FuseFlux2(path, Transformer, scale, FusedLoras);

    /// <inheritdoc />
    // diffusers' model_cpu_offload_seq: text_encoder->transformer->vae.
    protected override IReadOnlyDictionary<string, torch.nn.Module> OffloadableModels() => TextEncoderTransformerVae(TextEncoder, Transformer, Vae);

    /// <inheritdoc />
    protected override void FreeModels() => DisposeAll(Transformer, Vae, TextEncoder);
}
