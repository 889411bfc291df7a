using System.Diagnostics;
using System.Runtime.InteropServices;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// Times a pipeline the way diffusers' reference scripts (diffusers_baseline_sd35.py, tools/bench/diffusers_baseline_sdxl.py
/// and diffusers_baseline_flux.py) time diffusers: the denoiser forward (SD3 and the UNets at batch 2 = CFG, Flux at batch
/// 1), the whole text-to-image pipeline with given prompt embeddings (image output), the VAE decode, and each text encoder;
/// plus peak memory and the time from process start to the first image. The family (SD3, SD 1.x / 2.x, SDXL, Flux.1)
/// comes from the preset or model_index.json. Every timed region is bracketed by <c>cuda.synchronize</c> on CUDA; each
/// measure runs its warm-up runs, then its timed runs, and reports the median. As in the reference, the text encoders are
/// timed after the pipeline is freed (with random weights they are built only then), so the pipeline's peak memory is
/// denoiser + VAE (a loaded model folder keeps its text encoders in the pipeline unless offloaded).
/// </summary>
public static class PipelineBenchmark
{
    /// <summary>Runs the benchmark; <paramref name="log"/> receives progress lines.</summary>
    /// <exception cref="ArgumentException">Invalid options, or options the model's family does not have (before anything is loaded).</exception>
    public static BenchmarkReport Run(BenchmarkOptions options, Action<string>? log = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        log ??= _ => { };
        var startTime = ProcessStart();
        double benchStart = (DateTime.Now - startTime).TotalSeconds;
        var dtype = TorchDtypes.Parse(options.Dtype);
        string? folder = options.Model is { } model ? new PipelineLoadOptions { Device = options.Device }.ResolveFolder(model, cancellationToken) : null;
        var configs = ModelConfigs.Resolve(options.RandomWeights ?? folder!);
        options = options.WithFamilyDefaults(configs);
        var device = TorchDevices.Parse(options.Device);
        var run = new BenchmarkRun(options, configs, folder, device, dtype, startTime, log, cancellationToken);
        double deviceReady = run.Since();

        using var memory = new PeakMemoryMonitor(device);
        memory.Start();
        var measures = configs switch
        {
            PipelineConfigs sd3 => Sd3Benchmark.Run(run, sd3, memory),
            UNetPipelineConfigs unet => UNetBenchmark.Run(run, unet, memory),
            FluxPipelineConfigs flux => FluxBenchmark.Run(run, flux, memory),
            _ => throw new ArgumentException($"No benchmark for {configs.PipelineClass}."),
        };

        double pipelineS = measures.Pipeline.MedianMs / 1000;
        var memoryReport = measures.Memory;
        var summary = new Dictionary<string, double?>
        {
            [$"{(measures.DenoiserIsUnet ? "unet" : "transformer")}_step_b{measures.DenoiserBatch}_ms"] = Round(measures.Denoiser.MedianMs),
            ["vae_decode_ms"] = Round(measures.VaeDecode.MedianMs),
            ["pipeline_s"] = Round(pipelineS),
            ["pipeline_it_per_s"] = Round(options.Steps!.Value / pipelineS),
            ["pipeline_peak_mem_GiB"] = memoryReport.PeakAboveBaselineGiB is { } above ? Round(above) : memoryReport.PeakGiB is { } p ? Round(p) : null,
        };
        foreach (var (encoder, key) in measures.EncoderSummaryKeys)
            summary[key] = run.TextEncoders.TryGetValue(encoder, out var timing) ? Round(timing.MedianMs) : null;
        summary["first_image_s"] = Round(run.FirstImageS);
        bool sd3Family = configs is PipelineConfigs;
        return new BenchmarkReport
        {
            Model = options.Model, RandomWeights = options.RandomWeights is null ? null : configs.Name, PipelineClass = configs.PipelineClass,
            Device = device.ToString(), Dtype = TorchDtypes.Name(dtype),
            Height = options.Height!.Value, Width = options.Width!.Value, Steps = options.Steps.Value, GuidanceScale = options.GuidanceScale!.Value,
            Warmup = options.Warmup, Runs = options.Runs, TextTokens = measures.TextTokens,
            Offload = options.Offload == OffloadMode.Model ? "model" : "none", T5 = run.TextEncoders.ContainsKey("t5"),
            CollapsedText = sd3Family && options.NoT5 && Pipelines.StableDiffusion3.StableDiffusion3Request.CollapsesRepeatedText(options.CollapseRepeatedText, device),
            Machine = new MachineReport(RuntimeInformation.OSDescription, Environment.ProcessorCount, Environment.Version.ToString(),
                typeof(torch).Assembly.GetName().Version?.ToString() ?? "?", memory.DeviceName ?? (device.type == DeviceType.CUDA ? "cuda (name unavailable)" : "cpu"),
                device.type == DeviceType.CUDA ? (int)cuda.device_count() : 0),
            Parameters = run.Parameters, Summary = summary,
            TransformerForward = measures.DenoiserIsUnet ? null : measures.Denoiser,
            UnetForward = measures.DenoiserIsUnet ? measures.Denoiser : null,
            Pipeline = measures.Pipeline, PipelineItPerS = Round(options.Steps.Value / pipelineS),
            VaeDecode = measures.VaeDecode, TextEncoders = run.TextEncoders, Memory = memoryReport,
            ColdStart = new ColdStartReport(Round(benchStart), Round(deviceReady), Round(measures.ModelsReadyS), Round(run.FirstImageS), run.LoadMs),
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
}
