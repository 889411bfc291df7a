using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Benchmarks;

/// <summary>The configs of a Stable Diffusion 3 pipeline's models, for building them with random weights (no weight files
/// needed). Default run: diffusers' reference (1024x1024, 40 steps, guidance 4.5, 256 T5 tokens).</summary>
/// <param name="Name">The preset name or the folder the configs came from.</param>
/// <param name="Transformer">The MMDiT config.</param>
/// <param name="Vae">The VAE config.</param>
/// <param name="TextEncoder">CLIP-L, or null when the folder has none (prompt embeddings only).</param>
/// <param name="TextEncoder2">CLIP-G, or null with <paramref name="TextEncoder"/>.</param>
/// <param name="TextEncoder3">T5, or null when the folder has none.</param>
/// <param name="Scheduler">The scheduler config.</param>
public sealed record PipelineConfigs(string Name, SD3Transformer2DModelConfig Transformer, AutoencoderKLConfig Vae,
    CLIPTextConfig? TextEncoder, CLIPTextConfig? TextEncoder2, T5Config? TextEncoder3, FlowMatchEulerDiscreteSchedulerConfig Scheduler)
    : ModelConfigs(Name)
{
    /// <inheritdoc />
    public override string PipelineClass => "StableDiffusion3Pipeline";

    /// <summary>The name of the SD3.5-Medium preset.</summary>
    public const string Sd35Medium = "sd3.5-medium";

    /// <summary>
    /// Stable Diffusion 3.5 Medium at full size, with the hub configs (the transformer and VAE exactly as diffusers'
    /// reference benchmark builds them; CLIP-L, CLIP-G and T5-XXL as transformers' reference builds them).
    /// </summary>
    public static PipelineConfigs StableDiffusion35Medium { get; } = new(Sd35Medium,
        new SD3Transformer2DModelConfig
        {
            SampleSize = 128, PatchSize = 2, InChannels = 16, NumLayers = 24, AttentionHeadDim = 64, NumAttentionHeads = 24,
            JointAttentionDim = 4096, CaptionProjectionDim = 1536, PooledProjectionDim = 2048, OutChannels = 16,
            PosEmbedMaxSize = 384, DualAttentionLayers = Enumerable.Range(0, 13).ToArray(), QkNorm = "rms_norm",
        },
        new AutoencoderKLConfig
        {
            InChannels = 3, OutChannels = 3, DownBlockTypes = [.. Enumerable.Repeat("DownEncoderBlock2D", 4)],
            UpBlockTypes = [.. Enumerable.Repeat("UpDecoderBlock2D", 4)], BlockOutChannels = [128, 256, 512, 512],
            LayersPerBlock = 2, LatentChannels = 16, NormNumGroups = 32, SampleSize = 1024, ScalingFactor = 1.5305,
            ShiftFactor = 0.0609, UseQuantConv = false, UsePostQuantConv = false,
        },
        new CLIPTextConfig
        {
            HiddenSize = 768, IntermediateSize = 3072, NumAttentionHeads = 12, NumHiddenLayers = 12, ProjectionDim = 768,
            HiddenAct = "quick_gelu", VocabSize = 49408,
        },
        new CLIPTextConfig
        {
            HiddenSize = 1280, IntermediateSize = 5120, NumAttentionHeads = 20, NumHiddenLayers = 32, ProjectionDim = 1280,
            HiddenAct = "gelu", VocabSize = 49408,
        },
        new T5Config
        {
            DModel = 4096, DFf = 10240, DKv = 64, NumHeads = 64, NumLayers = 24, FeedForwardProj = "gated-gelu", VocabSize = 32128,
        },
        new FlowMatchEulerDiscreteSchedulerConfig { NumTrainTimesteps = 1000, Shift = 3.0 });

    /// <summary>
    /// A preset name (<see cref="Sd35Medium"/>) or a diffusers pipeline folder whose config files are read (its weights
    /// are not).
    /// </summary>
    /// <exception cref="ArgumentException">Neither a known preset nor an existing folder.</exception>
    public static new PipelineConfigs Resolve(string presetOrFolder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(presetOrFolder);
        if (string.Equals(presetOrFolder.Trim(), Sd35Medium, StringComparison.OrdinalIgnoreCase)) return StableDiffusion35Medium;
        if (!Directory.Exists(presetOrFolder))
            throw new ArgumentException($"Unknown random-weights preset '{presetOrFolder}': expected {Sd35Medium} or a pipeline folder whose configs to use.");
        string Sub(params string[] parts) => Path.Combine([presetOrFolder, .. parts]);
        T? Optional<T>(string component) where T : class
        {
            string path = Sub(component, "config.json");
            return File.Exists(path) ? ConfigJson.Read<T>(path) : null;
        }
        return new PipelineConfigs(Path.GetFullPath(presetOrFolder),
            ConfigJson.Read<SD3Transformer2DModelConfig>(Sub("transformer", "config.json")),
            ConfigJson.Read<AutoencoderKLConfig>(Sub("vae", "config.json")),
            Optional<CLIPTextConfig>("text_encoder"), Optional<CLIPTextConfig>("text_encoder_2"), Optional<T5Config>("text_encoder_3"),
            ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Sub("scheduler", "scheduler_config.json")));
    }
}

/// <summary>
/// Models with random weights for benchmarks: built on <c>meta</c> (no memory), then every parameter and persistent
/// buffer becomes <c>randn * std</c> drawn directly on the target device in the target dtype, so a full-size model
/// costs no float32 host copy and no download. Seeded for parity when given a generator (<see cref="Fill"/>).
/// </summary>
public static class RandomWeights
{
    /// <summary>The standard deviation diffusers' reference benchmark uses.</summary>
    public const double DefaultStd = 0.02;

    /// <summary>Builds a model on <c>meta</c> with <paramref name="build"/> and fills it on <paramref name="device"/>.</summary>
    public static T Build<T>(Func<Device, ScalarType, T> build, Device device, ScalarType dtype, double std = DefaultStd) where T : nn.Module
    {
        ArgumentNullException.ThrowIfNull(build);
        var model = build(new Device(DeviceType.META), dtype);
        try
        {
            Fill(model, device, std);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Replaces every floating-point parameter and buffer of <paramref name="module"/> (built on <c>meta</c>) by
    /// <c>randn * std</c> on <paramref name="device"/>, in state_dict keys' ordinal order (Python's <c>sorted()</c>), and
    /// switches to eval mode. Without a generator each tensor is drawn directly in its own dtype on the device (fast, no
    /// host copy; tied tensors drawn once). With one, each is drawn in float32 from it and then cast, key after key:
    /// the procedure diffusers' full-size fixture used, so the weights replay exactly. Returns the keys in draw order.
    /// </summary>
    public static IReadOnlyList<string> Fill(nn.Module module, Device device, double std = DefaultStd, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(device);
        var entries = module.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        // Tied weights (T5's shared / embed_tokens: one module under two names) share one tensor: draw it once.
        if (generator is null) entries = entries.DistinctBy(kv => kv.Value.Handle).ToList();
        var plan = entries.Select(kv => (kv.Key, kv.Value.shape, kv.Value.dtype)).ToList();
        foreach (var (key, _, dtype) in plan)
            if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64))
                throw new ArgumentException($"{module.GetName()}: '{key}' is {dtype}; random weights are drawn for floating-point tensors only.", nameof(module));
        using var noGrad = no_grad();
        var replacer = new StateDictLoader.Replacer(module);
        foreach (var (key, shape, dtype) in plan)
            replacer.Replace(key, generator is null
                ? randn(shape, dtype: dtype, device: device).mul_(std)
                : Randn(generator, shape, dtype, device, std));
        var left = module.state_dict().Where(kv => kv.Value.device_type == DeviceType.META).Select(kv => kv.Key).ToList();
        if (left.Count > 0)
            throw new InvalidOperationException($"{module.GetName()}: still on the meta device after filling: {string.Join(", ", left)}.");
        module.eval();
        return plan.Select(p => p.Key).ToList();
    }

    /// <summary>
    /// One draw as diffusers' fixtures make them: <c>randn(shape, float32)</c> from <paramref name="generator"/> on
    /// <paramref name="device"/>, times <paramref name="scale"/>, cast to <paramref name="dtype"/>.
    /// </summary>
    public static Tensor Randn(Runtime.Generator generator, long[] shape, ScalarType dtype, Device device, double scale = 1.0)
    {
        ArgumentNullException.ThrowIfNull(generator);
        using var scope = NewDisposeScope();
        var drawn = generator.Randn(shape, ScalarType.Float32, device);
        var scaled = scale == 1.0 ? drawn : drawn * scale;
        var result = scaled.dtype == dtype ? scaled : scaled.to(dtype);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The number of parameters (as <c>sum(p.numel() for p in model.parameters())</c>).</summary>
    public static long CountParameters(nn.Module module) => module.parameters().Sum(t => t.numel());
}
