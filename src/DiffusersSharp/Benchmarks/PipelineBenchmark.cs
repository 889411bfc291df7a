using System.Diagnostics;
using System.Runtime.InteropServices;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// Times the SD3 stack the way diffusers' reference script (diffusers_baseline_sd35.py) times diffusers: the transformer
/// forward (batch 2 = CFG, 77 + max_sequence_length text tokens), the whole text-to-image pipeline with given prompt
/// embeddings (image output), the VAE decode, and each text encoder on batch 2; plus peak memory and the time from process
/// start to the first image. Every timed region is bracketed by <c>cuda.synchronize</c> on CUDA; each measure runs its
/// warm-up runs, then its timed runs, and reports the median. As in the reference, the text encoders are timed after the
/// pipeline is freed (with random weights they are built only then), so the pipeline's peak memory is transformer + VAE
/// (a loaded model folder keeps its text encoders in the pipeline unless offloaded).
/// </summary>
public static class PipelineBenchmark
{
    /// <summary>Runs the benchmark; <paramref name="log"/> receives progress lines.</summary>
    /// <exception cref="ArgumentException">Invalid options (before anything is loaded).</exception>
    public static BenchmarkReport Run(BenchmarkOptions options, Action<string>? log = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        log ??= _ => { };
        var startTime = ProcessStart();
        double Since() => (DateTime.Now - startTime).TotalSeconds;
        double benchStart = Since();
        var dtype = TorchDtypes.Parse(options.Dtype);
        var configs = options.RandomWeights is { } preset ? PipelineConfigs.Resolve(preset) : null;
        var device = TorchDevices.Parse(options.Device);
        double deviceReady = Since();

        using var memory = new PeakMemoryMonitor(device);
        memory.Start();
        var loadMs = new Dictionary<string, double>();
        var parameters = new Dictionary<string, long>();
        StableDiffusion3Components components;
        if (configs is not null)
        {
            log($"building {configs.Name} transformer and VAE with random weights on {device} ({options.Dtype})");
            // Under offload the models wait on the CPU; the execution device only ever holds one.
            var home = options.Offload == OffloadMode.Model ? CPU : device;
            var transformer = Timed(loadMs, "transformer", device,
                () => RandomWeights.Build((d, t) => new SD3Transformer2DModel(configs.Transformer, d, t), home, dtype));
            var vae = Timed(loadMs, "vae", device, () => RandomWeights.Build((d, t) => new AutoencoderKL(configs.Vae, d, t), home, dtype));
            components = new StableDiffusion3Components
            {
                Transformer = transformer, Vae = vae, SchedulerConfig = configs.Scheduler, Device = device, Dtype = dtype,
            };
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
        }
        else
        {
            log($"loading {options.Model} on {device} ({options.Dtype})");
            components = StableDiffusion3Components.FromPretrained(options.Model!, new PipelineLoadOptions
            {
                Dtype = dtype, Device = options.Device, LoadTextEncoder3 = !options.NoT5, Offload = options.Offload,
            }, cancellationToken);
            foreach (var (name, ms) in components.LoadMilliseconds) loadMs[name] = Round(ms);
        }
        double modelsReady = Since();

        var textEncoders = new Dictionary<string, TimingReport>();
        TimingReport transformerTiming, pipelineTiming, vaeTiming;
        double firstImage = double.NaN;
        MemoryReport memoryReport;
        using (var pipeline = new StableDiffusion3Pipeline(components))
        {
            components.Dispose(); // the pipeline's reference keeps them until it is disposed
            parameters["transformer"] = RandomWeights.CountParameters(components.Transformer);
            parameters["vae"] = RandomWeights.CountParameters(components.Vae);
            var tc = components.Transformer.Config;
            int textTokens = 77 + options.MaxSequenceLength;
            int latentH = options.Height / components.Vae.VaeScaleFactor, latentW = options.Width / components.Vae.VaeScaleFactor;
            using var scope = NewDisposeScope();
            using var inference = inference_mode();
            var embeds = randn([1, textTokens, tc.JointAttentionDim], dtype: dtype, device: device);
            var pooled = randn([1, tc.PooledProjectionDim], dtype: dtype, device: device);
            // Without T5 the pipeline's prompt embeddings end in T5's zero rows (what EncodePrompt gives), so the pipeline
            // measure times what a user without T5 runs; the transformer measure keeps the reference's random rows.
            var pipelineEmbeds = options.NoT5 ? WithoutT5Rows(embeds, options.MaxSequenceLength) : embeds;
            string text = options.NoT5
                ? $"prompt embeddings 1x{textTokens} with {options.MaxSequenceLength} zero T5 rows{(options.CollapseRepeatedText ? " (run as one counted key)" : "")}"
                : $"prompt embeddings 1x{textTokens}";

            log($"pipeline: {options.Width}x{options.Height}, {options.Steps} steps, guidance {options.GuidanceScale}");
            bool first = true;
            pipelineTiming = Time($"{options.Width}x{options.Height}, {options.Steps} steps, guidance {options.GuidanceScale}, {text}, image output",
                options, device, () =>
                {
                    using var generator = new Generator(device).ManualSeed(options.Seed);
                    var output = pipeline.Generate(new StableDiffusion3Request
                    {
                        PromptEmbeds = pipelineEmbeds, PooledPromptEmbeds = pooled, NegativePromptEmbeds = pipelineEmbeds, NegativePooledPromptEmbeds = pooled,
                        CollapseRepeatedText = options.CollapseRepeatedText,
                        Height = options.Height, Width = options.Width, NumInferenceSteps = options.Steps,
                        GuidanceScale = options.GuidanceScale, Generator = generator, OutputType = OutputType.Image,
                        MaxSequenceLength = options.MaxSequenceLength,
                    }, cancellationToken: cancellationToken);
                    if (output.Images is not { Count: 1 }) throw new InvalidOperationException("The pipeline returned no image.");
                    if (first)
                    {
                        Synchronize(device);
                        firstImage = Since();
                        first = false;
                    }
                }, cancellationToken);
            memoryReport = memory.Report();

            log("transformer forward, batch 2");
            components.Activate("transformer");
            var x = randn([2, tc.InChannels, latentH, latentW], dtype: dtype, device: device);
            var text2 = embeds.repeat(2, 1, 1);
            var pooled2 = pooled.repeat(2, 1);
            var timestep = tensor(new float[] { 500f, 500f }, device: device);
            transformerTiming = Time($"batch 2 x {tc.InChannels}x{latentH}x{latentW} latents + {textTokens} text tokens, timestep 500",
                options, device, () => components.Transformer.forward(x, text2, pooled2, timestep).Dispose(), cancellationToken);

            log("VAE decode");
            components.Activate("vae");
            var z = randn([1, components.Vae.Config.LatentChannels, latentH, latentW], dtype: dtype, device: device);
            vaeTiming = Time($"1 x {components.Vae.Config.LatentChannels}x{latentH}x{latentW} latents -> {options.Width}x{options.Height}",
                options, device, () => components.Vae.Decode(z).Dispose(), cancellationToken);
            components.OffloadAll();

            if (configs is null)
            {
                TimeEncoders(textEncoders, parameters, options, device, components.TextEncoder, components.TextEncoder2, components.TextEncoder3,
                    name => components.Activate(name), log, cancellationToken);
                components.OffloadAll();
            }
        }

        if (configs is not null)
        {
            // Built one at a time after the pipeline is gone, as the reference does.
            TimeRandomEncoder(textEncoders, parameters, "text_encoder", configs, options, device, dtype, log, cancellationToken);
            TimeRandomEncoder(textEncoders, parameters, "text_encoder_2", configs, options, device, dtype, log, cancellationToken);
            if (!options.NoT5 && configs.TextEncoder3 is not null)
                TimeRandomEncoder(textEncoders, parameters, "text_encoder_3", configs, options, device, dtype, log, cancellationToken);
        }

        double pipelineS = pipelineTiming.MedianMs / 1000;
        var summary = new Dictionary<string, double?>
        {
            ["transformer_step_b2_ms"] = Round(transformerTiming.MedianMs),
            ["vae_decode_ms"] = Round(vaeTiming.MedianMs),
            ["pipeline_s"] = Round(pipelineS),
            ["pipeline_it_per_s"] = Round(options.Steps / pipelineS),
            ["pipeline_peak_mem_GiB"] = memoryReport.PeakAboveBaselineGiB is { } above ? Round(above) : memoryReport.PeakGiB is { } p ? Round(p) : null,
            [$"t5xxl_b2_{options.MaxSequenceLength}_ms"] = textEncoders.TryGetValue("t5", out var t5) ? Round(t5.MedianMs) : null,
            ["clipg_b2_ms"] = textEncoders.TryGetValue("clip_g", out var g) ? Round(g.MedianMs) : null,
            ["clipl_b2_ms"] = textEncoders.TryGetValue("clip_l", out var l) ? Round(l.MedianMs) : null,
            ["first_image_s"] = Round(firstImage),
        };
        return new BenchmarkReport
        {
            Model = options.Model, RandomWeights = configs?.Name, Device = device.ToString(), Dtype = TorchDtypes.Name(dtype),
            Height = options.Height, Width = options.Width, Steps = options.Steps, GuidanceScale = options.GuidanceScale,
            Warmup = options.Warmup, Runs = options.Runs, TextTokens = 77 + options.MaxSequenceLength,
            Offload = options.Offload == OffloadMode.Model ? "model" : "none", T5 = textEncoders.ContainsKey("t5"),
            CollapsedText = options.NoT5 && options.CollapseRepeatedText,
            Machine = new MachineReport(RuntimeInformation.OSDescription, Environment.ProcessorCount, Environment.Version.ToString(),
                typeof(torch).Assembly.GetName().Version?.ToString() ?? "?", memory.DeviceName ?? (device.type == DeviceType.CUDA ? "cuda (name unavailable)" : "cpu"),
                device.type == DeviceType.CUDA ? (int)cuda.device_count() : 0),
            Parameters = parameters, Summary = summary,
            TransformerForward = transformerTiming, Pipeline = pipelineTiming, PipelineItPerS = Round(options.Steps / pipelineS),
            VaeDecode = vaeTiming, TextEncoders = textEncoders, Memory = memoryReport,
            ColdStart = new ColdStartReport(Round(benchStart), Round(deviceReady), Round(modelsReady), Round(firstImage), loadMs),
        };
    }

    /// <summary>
    /// <paramref name="embeds"/> [B, 77 + <paramref name="t5Tokens"/>, D] with its last <paramref name="t5Tokens"/> rows
    /// zeroed: the prompt embeddings StableDiffusion3Pipeline makes when T5 is left out.
    /// </summary>
    public static Tensor WithoutT5Rows(Tensor embeds, int t5Tokens)
    {
        ArgumentNullException.ThrowIfNull(embeds);
        long rows = embeds.shape[1];
        if (t5Tokens < 0 || t5Tokens > rows) throw new ArgumentOutOfRangeException(nameof(t5Tokens), $"{t5Tokens} T5 rows of a {rows}-row sequence.");
        var result = embeds.clone();
        result.narrow(1, rows - t5Tokens, t5Tokens).zero_();
        return result;
    }

    private static void TimeEncoders(Dictionary<string, TimingReport> results, Dictionary<string, long> parameters, BenchmarkOptions options,
        Device device, CLIPTextModelWithProjection? clipL, CLIPTextModelWithProjection? clipG, T5EncoderModel? t5,
        Action<string> activate, Action<string> log, CancellationToken ct)
    {
        if (clipL is not null) { activate("text_encoder"); TimeClip(results, parameters, "text_encoder", clipL, options, device, log, ct); }
        if (clipG is not null) { activate("text_encoder_2"); TimeClip(results, parameters, "text_encoder_2", clipG, options, device, log, ct); }
        if (t5 is not null && !options.NoT5) { activate("text_encoder_3"); TimeT5(results, parameters, t5, options, device, log, ct); }
    }

    private static void TimeRandomEncoder(Dictionary<string, TimingReport> results, Dictionary<string, long> parameters, string component,
        PipelineConfigs configs, BenchmarkOptions options, Device device, ScalarType dtype, Action<string> log, CancellationToken ct)
    {
        log($"building {component} with random weights");
        if (component == "text_encoder_3")
        {
            using var t5 = RandomWeights.Build((d, t) => new T5EncoderModel(configs.TextEncoder3!, d, t), device, dtype);
            TimeT5(results, parameters, t5, options, device, log, ct);
            return;
        }
        var config = component == "text_encoder" ? configs.TextEncoder : configs.TextEncoder2;
        using var clip = RandomWeights.Build((d, t) => new CLIPTextModelWithProjection(config, d, t), device, dtype);
        TimeClip(results, parameters, component, clip, options, device, log, ct);
    }

    private static void TimeClip(Dictionary<string, TimingReport> results, Dictionary<string, long> parameters, string component,
        CLIPTextModelWithProjection model, BenchmarkOptions options, Device device, Action<string> log, CancellationToken ct)
    {
        string key = component == "text_encoder" ? "clip_l" : "clip_g";
        log($"{key}, batch 2");
        parameters[component] = RandomWeights.CountParameters(model);
        int length = model.Config.MaxPositionEmbeddings;
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var ids = randint(0, model.Config.VocabSize, [2, length], dtype: ScalarType.Int64, device: device);
        results[key] = Time($"batch 2 x {length} tokens, all hidden states", options, device, () => model.Forward(ids, outputHiddenStates: true).Dispose(), ct);
    }

    private static void TimeT5(Dictionary<string, TimingReport> results, Dictionary<string, long> parameters, T5EncoderModel model,
        BenchmarkOptions options, Device device, Action<string> log, CancellationToken ct)
    {
        log("t5, batch 2");
        parameters["text_encoder_3"] = RandomWeights.CountParameters(model);
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var ids = randint(0, model.Config.VocabSize, [2, options.MaxSequenceLength], dtype: ScalarType.Int64, device: device);
        results["t5"] = Time($"batch 2 x {options.MaxSequenceLength} tokens", options, device, () => model.Forward(ids).Dispose(), ct);
    }

    private static T Timed<T>(Dictionary<string, double> loadMs, string name, Device device, Func<T> build)
    {
        Synchronize(device);
        long start = Stopwatch.GetTimestamp();
        var result = build();
        Synchronize(device);
        loadMs[name] = Round(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return result;
    }

    /// <summary>Warm-up runs, then timed runs, each bracketed by a device synchronization; each run in its own dispose scope.</summary>
    private static TimingReport Time(string input, BenchmarkOptions options, Device device, Action run, CancellationToken ct)
    {
        double Once()
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            Synchronize(device);
            long start = Stopwatch.GetTimestamp();
            run();
            Synchronize(device);
            return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        var warmup = Enumerable.Range(0, options.Warmup).Select(_ => Round(Once())).ToList();
        var runs = Enumerable.Range(0, options.Runs).Select(_ => Round(Once())).ToList();
        return new TimingReport(input, Round(Median(runs)), runs.Min(), runs, warmup);
    }

    /// <summary>The median (the mean of the two middle values for an even count).</summary>
    public static double Median(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count == 0) throw new ArgumentException("No values.", nameof(values));
        var sorted = values.Order().ToArray();
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    private static double Round(double value) => Math.Round(value, 3);

    private static DateTime ProcessStart()
    {
        using var process = Process.GetCurrentProcess();
        return process.StartTime;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}
