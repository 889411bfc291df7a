using System.Diagnostics;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Pipelines;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// One benchmark run as every family measures it: the options with the family's defaults filled in, the device and
/// dtype, the clock since process start, and the shared ways to time (warm-up, then timed runs bracketed by
/// <c>cuda.synchronize</c>), to build a model with random weights, and to time a text encoder.
/// </summary>
internal sealed class BenchmarkRun(BenchmarkOptions options, ModelConfigs configs, string? folder, Device device, ScalarType dtype,
    DateTime processStart, Action<string> log, CancellationToken ct)
{
    public BenchmarkOptions Options { get; } = options;
    public ModelConfigs Configs { get; } = configs;
    /// <summary>The model folder to load (null with random weights).</summary>
    public string? Folder { get; } = folder;
    public bool RandomWeights => Folder is null;
    public Device Device { get; } = device;
    public ScalarType Dtype { get; } = dtype;
    public Action<string> Log { get; } = log;
    public CancellationToken Ct { get; } = ct;
    public int Height => Options.Height!.Value;
    public int Width => Options.Width!.Value;
    public int Steps => Options.Steps!.Value;
    public double Guidance => Options.GuidanceScale!.Value;
    /// <summary>Where random-weight models are built: the CPU under model offload (the device holds one at a time).</summary>
    public Device Home => Options.Offload == OffloadMode.Model ? CPU : Device;
    public Dictionary<string, double> LoadMs { get; } = [];
    public Dictionary<string, long> Parameters { get; } = [];
    public Dictionary<string, TimingReport> TextEncoders { get; } = [];
    public double FirstImageS { get; private set; } = double.NaN;

    public double Since() => (DateTime.Now - processStart).TotalSeconds;

    /// <summary>Records the first pipeline image (once).</summary>
    public void MarkFirstImage()
    {
        if (!double.IsNaN(FirstImageS)) return;
        Synchronize();
        FirstImageS = Since();
    }

    /// <summary>Builds <paramref name="component"/> on meta and fills it with random weights on <see cref="Home"/>, timed.</summary>
    public T BuildRandom<T>(string component, Func<Device, ScalarType, T> build) where T : nn.Module =>
        Timed(component, () => Benchmarks.RandomWeights.Build(build, Home, Dtype));

    /// <summary>Runs <paramref name="build"/> and records its milliseconds under <paramref name="name"/>.</summary>
    public T Timed<T>(string name, Func<T> build)
    {
        Synchronize();
        long start = Stopwatch.GetTimestamp();
        var result = build();
        Synchronize();
        LoadMs[name] = Round(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return result;
    }

    /// <summary>Warm-up runs, then timed runs, each bracketed by a device synchronization; each run in its own dispose scope.</summary>
    public TimingReport Time(string input, Action run)
    {
        double Once()
        {
            Ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            Synchronize();
            long start = Stopwatch.GetTimestamp();
            run();
            Synchronize();
            return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        var warmup = Enumerable.Range(0, Options.Warmup).Select(_ => Round(Once())).ToList();
        var runs = Enumerable.Range(0, Options.Runs).Select(_ => Round(Once())).ToList();
        return new TimingReport(input, Round(PipelineBenchmark.Median(runs)), runs.Min(), runs, warmup);
    }

    /// <summary>The VAE decode measure every family shares: one latent of the image's size, batch 1.</summary>
    public TimingReport TimeVaeDecode(AutoencoderKL vae, int latentH, int latentW)
    {
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var z = randn([1, vae.Config.LatentChannels, latentH, latentW], dtype: Dtype, device: Device);
        return Time($"1 x {vae.Config.LatentChannels}x{latentH}x{latentW} latents -> {Width}x{Height}", () => vae.Decode(z).Dispose());
    }

    /// <summary>
    /// Times a CLIP encoder (<see cref="CLIPTextModel"/> or <see cref="CLIPTextModelWithProjection"/>) on
    /// <paramref name="batch"/> x 77 random tokens as <paramref name="key"/>, and counts its parameters as <paramref name="component"/>.
    /// </summary>
    public void TimeClip(string key, string component, nn.Module model, CLIPTextConfig config, int batch, bool hiddenStates)
    {
        Log($"{key}, batch {batch}");
        Parameters[component] = Benchmarks.RandomWeights.CountParameters(model);
        int length = config.MaxPositionEmbeddings;
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var ids = randint(0, config.VocabSize, [batch, length], dtype: ScalarType.Int64, device: Device);
        Func<CLIPTextModelOutput> forward = model switch
        {
            CLIPTextModel m => () => m.Forward(ids, outputHiddenStates: hiddenStates),
            CLIPTextModelWithProjection m => () => m.Forward(ids, outputHiddenStates: hiddenStates),
            _ => throw new ArgumentException($"{model.GetName()} is not a CLIP text model.", nameof(model)),
        };
        TextEncoders[key] = Time($"batch {batch} x {length} tokens{(hiddenStates ? ", all hidden states" : "")}", () => forward().Dispose());
    }

    /// <summary>Times T5 on <paramref name="batch"/> x <paramref name="tokens"/> random tokens as <c>t5</c>.</summary>
    public void TimeT5(string component, T5EncoderModel model, int batch, int tokens)
    {
        Log($"t5, batch {batch}");
        Parameters[component] = Benchmarks.RandomWeights.CountParameters(model);
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var ids = randint(0, model.Config.VocabSize, [batch, tokens], dtype: ScalarType.Int64, device: Device);
        TextEncoders["t5"] = Time($"batch {batch} x {tokens} tokens", () => model.Forward(ids).Dispose());
    }

    /// <summary>Builds a CLIP encoder with random weights on the device, times it, and frees it (the reference builds
    /// the text encoders one at a time after the pipeline is gone).</summary>
    public void TimeRandomClip(string key, string component, CLIPTextConfig config, bool withProjection, int batch, bool hiddenStates)
    {
        Log($"building {component} with random weights");
        using nn.Module model = withProjection
            ? (nn.Module)Benchmarks.RandomWeights.Build((d, t) => new CLIPTextModelWithProjection(config, d, t), Device, Dtype)
            : Benchmarks.RandomWeights.Build((d, t) => new CLIPTextModel(config, d, t), Device, Dtype);
        TimeClip(key, component, model, config, batch, hiddenStates);
    }

    /// <summary>Builds T5 with random weights on the device, times it, and frees it.</summary>
    public void TimeRandomT5(string component, T5Config config, int batch, int tokens)
    {
        Log($"building {component} with random weights");
        using var model = Benchmarks.RandomWeights.Build((d, t) => new T5EncoderModel(config, d, t), Device, Dtype);
        TimeT5(component, model, batch, tokens);
    }

    public void Synchronize()
    {
        if (Device.type == DeviceType.CUDA) cuda.synchronize(Device);
    }

    public static double Round(double value) => Math.Round(value, 3);
}

/// <summary>What a family's measures give the report.</summary>
/// <param name="Denoiser">The transformer or UNet forward.</param>
/// <param name="DenoiserIsUnet">Whether <paramref name="Denoiser"/> is a UNet (reported as <c>unet_forward</c>).</param>
/// <param name="DenoiserBatch">The forward's batch (2 under CFG).</param>
/// <param name="Pipeline">The pipeline call.</param>
/// <param name="VaeDecode">The VAE decode.</param>
/// <param name="Memory">Peak memory of the pipeline runs.</param>
/// <param name="ModelsReadyS">Seconds since process start when the pipeline's models were ready.</param>
/// <param name="TextTokens">Text tokens of the prompt embeddings.</param>
/// <param name="EncoderSummaryKeys">Text encoder key (clip_l, clip_g, t5) -> summary key, for every encoder the family has.</param>
internal sealed record FamilyMeasures(TimingReport Denoiser, bool DenoiserIsUnet, int DenoiserBatch, TimingReport Pipeline, TimingReport VaeDecode,
    MemoryReport Memory, double ModelsReadyS, int TextTokens, IReadOnlyDictionary<string, string> EncoderSummaryKeys);
