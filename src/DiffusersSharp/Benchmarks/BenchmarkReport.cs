namespace DiffusersSharp.Benchmarks;

/// <summary>One timed measure: every run after the warm-up, and their median.</summary>
/// <param name="Input">What was run, e.g. "batch 2 x 16x128x128 latents + 333 text tokens".</param>
/// <param name="MedianMs">Median of <paramref name="RunsMs"/>.</param>
/// <param name="MinMs">Fastest run.</param>
/// <param name="RunsMs">Each timed run (device-synchronized before and after).</param>
/// <param name="WarmupMs">Each warm-up run (the first includes lazy initialization).</param>
public sealed record TimingReport(string Input, double MedianMs, double MinMs, IReadOnlyList<double> RunsMs, IReadOnlyList<double> WarmupMs);

/// <summary>Where the time to the first image went, in seconds since the process started (Process.StartTime).</summary>
/// <param name="BenchStartS">When the benchmark began (runtime start, assembly loading, command-line parsing).</param>
/// <param name="DeviceReadyS">After the device was initialized (CUDA libtorch loaded).</param>
/// <param name="ModelsReadyS">After every model of the pipeline run was loaded or built (and placed).</param>
/// <param name="FirstImageS">After the first pipeline call returned its image (the first warm-up run, all its steps).</param>
/// <param name="ComponentLoadMs">Milliseconds to load (or build and fill with random numbers) each model.</param>
public sealed record ColdStartReport(double BenchStartS, double DeviceReadyS, double ModelsReadyS, double FirstImageS,
    IReadOnlyDictionary<string, double> ComponentLoadMs);

/// <summary>The machine and software.</summary>
/// <param name="Os">OS description.</param>
/// <param name="CpuCount">Logical processors.</param>
/// <param name="Dotnet">.NET runtime version.</param>
/// <param name="TorchSharp">TorchSharp assembly version.</param>
/// <param name="DeviceName">The GPU's name (NVML), or "cpu".</param>
/// <param name="CudaDeviceCount">CUDA devices visible (0 on a CPU run).</param>
public sealed record MachineReport(string Os, int CpuCount, string Dotnet,
    [property: System.Text.Json.Serialization.JsonPropertyName("torchsharp")] string TorchSharp, string DeviceName, int CudaDeviceCount);

/// <summary>
/// The benchmark's result: the same measures as diffusers' reference scripts (diffusers_baseline_sd35.py; for SDXL /
/// SD 1.x and Flux tools/bench/diffusers_baseline_sdxl.py and diffusers_baseline_flux.py), plus cold start and details.
/// <see cref="Summary"/> uses the reference's key names so the two JSONs compare side by side.
/// </summary>
public sealed record BenchmarkReport
{
    /// <summary>"DiffusersSharp".</summary>
    public string Tool { get; init; } = "DiffusersSharp";
    /// <summary>The model folder or hub id (null with random weights).</summary>
    public string? Model { get; init; }
    /// <summary>The random-weights preset or config folder (null with a model).</summary>
    public string? RandomWeights { get; init; }
    /// <summary>The diffusers pipeline class measured (StableDiffusion3Pipeline, StableDiffusionXLPipeline,
    /// StableDiffusionPipeline or FluxPipeline).</summary>
    public required string PipelineClass { get; init; }
    /// <summary>The execution device.</summary>
    public required string Device { get; init; }
    /// <summary>The models' dtype.</summary>
    public required string Dtype { get; init; }
    /// <summary>Image height.</summary>
    public required int Height { get; init; }
    /// <summary>Image width.</summary>
    public required int Width { get; init; }
    /// <summary>Pipeline steps.</summary>
    public required int Steps { get; init; }
    /// <summary>Guidance scale.</summary>
    public required double GuidanceScale { get; init; }
    /// <summary>Warm-up runs per measure.</summary>
    public required int Warmup { get; init; }
    /// <summary>Timed runs per measure.</summary>
    public required int Runs { get; init; }
    /// <summary>Text tokens of the prompt embeddings (SD3: 77 + max_sequence_length; UNets: 77; Flux: max_sequence_length).</summary>
    public required int TextTokens { get; init; }
    /// <summary>"none" or "model".</summary>
    public required string Offload { get; init; }
    /// <summary>Whether T5 was timed.</summary>
    public required bool T5 { get; init; }
    /// <summary>Whether the pipeline measure ran T5's zero rows as one counted key (only without T5).</summary>
    public required bool CollapsedText { get; init; }
    /// <summary>Machine and software.</summary>
    public required MachineReport Machine { get; init; }
    /// <summary>Parameters per component.</summary>
    public required IReadOnlyDictionary<string, long> Parameters { get; init; }
    /// <summary>Medians under the reference script's key names (ms, or s for the pipeline; it/s; GiB).</summary>
    public required IReadOnlyDictionary<string, double?> Summary { get; init; }
    /// <summary>One transformer forward: SD3 batch 2 (CFG), Flux batch 1 (absent for the UNet models).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public TimingReport? TransformerForward { get; init; }
    /// <summary>One UNet forward, batch 2 (CFG) (absent for the transformer models).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public TimingReport? UnetForward { get; init; }
    /// <summary>The whole pipeline call with given prompt embeddings, image output.</summary>
    public required TimingReport Pipeline { get; init; }
    /// <summary>Pipeline steps per second (steps / median pipeline time).</summary>
    public required double PipelineItPerS { get; init; }
    /// <summary>One VAE decode, batch 1.</summary>
    public required TimingReport VaeDecode { get; init; }
    /// <summary>Each text encoder (clip_l, clip_g, t5), batch 2 (SD3, UNets) or 1 (Flux).</summary>
    public required IReadOnlyDictionary<string, TimingReport> TextEncoders { get; init; }
    /// <summary>Peak memory of the pipeline runs.</summary>
    public required MemoryReport Memory { get; init; }
    /// <summary>Time to the first image.</summary>
    public required ColdStartReport ColdStart { get; init; }
}
