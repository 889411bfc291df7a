using DiffusersSharp.Pipelines;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// What <see cref="PipelineBenchmark"/> measures. Size, steps, guidance and T5 tokens left null take the family's
/// defaults (<see cref="WithFamilyDefaults"/>): SD3 1024x1024, 40 steps, guidance 4.5, 256 T5 tokens (diffusers'
/// reference run); SDXL 1024x1024, 50 steps, 5.0; SD 1.x / 2.x the UNet's size (512x512 for 1.5), 50 steps, 7.5;
/// FLUX.1-dev 1024x1024, 50 steps, 3.5, 512 tokens; FLUX.1-schnell 1024x1024, 4 steps, no guidance, 256 tokens.
/// </summary>
public sealed record BenchmarkOptions
{
    /// <summary>A pipeline folder or hub repo id to load (SD3, SD 1.x / 2.x, SDXL or Flux.1, told apart by
    /// model_index.json); exactly one of this and <see cref="RandomWeights"/>.</summary>
    public string? Model { get; init; }

    /// <summary>Random weights instead of a model: a preset (<see cref="ModelConfigs.Presets"/>: sd3.5-medium, sdxl-base,
    /// sd1.5, flux.1-schnell, flux.1-dev) or a pipeline folder whose configs to use.</summary>
    public string? RandomWeights { get; init; }

    /// <summary>"cpu", "cuda" or "cuda:N".</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>float32, bfloat16 or float16.</summary>
    public string Dtype { get; init; } = "float32";

    /// <summary>Image height in pixels (null: the family's default).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels (null: the family's default).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps of the pipeline run (null: the family's default).</summary>
    public int? Steps { get; init; }

    /// <summary>Guidance scale of the pipeline run (SD3 / UNets: above 1 is CFG, batch 2; FLUX.1-dev: the embedded
    /// guidance; null: the family's default).</summary>
    public double? GuidanceScale { get; init; }

    /// <summary>Untimed runs before the timed ones, per measure.</summary>
    public int Warmup { get; init; } = 1;

    /// <summary>Timed runs per measure (the median is reported).</summary>
    public int Runs { get; init; } = 3;

    /// <summary>T5 tokens (SD3: the text sequence is 77 + this; Flux: the text sequence; null: the family's default).</summary>
    public int? MaxSequenceLength { get; init; }

    /// <summary>SD3: leave T5 out (its embeddings are zeros; the text sequence keeps its length).</summary>
    public bool NoT5 { get; init; }

    /// <summary>
    /// With <see cref="NoT5"/>: whether the pipeline runs T5's identical zero rows as one counted attention key
    /// (<see cref="Pipelines.StableDiffusion3.StableDiffusion3Request.CollapseRepeatedText"/>); false times the full
    /// sequence, as diffusers runs it; null (the default) is the pipeline's default, collapsed on the CPU only.
    /// </summary>
    public bool? CollapseRepeatedText { get; init; }

    /// <summary>Model CPU offload.</summary>
    public OffloadMode Offload { get; init; } = OffloadMode.None;

    /// <summary>Seed of the pipeline's generator (diffusers' reference uses 123456).</summary>
    public long Seed { get; init; } = 123456;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option (the family's own checks are in
    /// <see cref="WithFamilyDefaults"/>).</summary>
    public void Validate()
    {
        if ((Model is null) == (RandomWeights is null))
            throw new ArgumentException("Give exactly one of a model (folder or hub id) and random weights (a preset such as sd3.5-medium).");
        if (Height <= 0 || Width <= 0) throw new ArgumentException($"height and width must be positive, got {Height}x{Width}.");
        if (Steps < 1) throw new ArgumentException($"steps must be at least 1, got {Steps}.");
        if (GuidanceScale is { } g && !double.IsFinite(g)) throw new ArgumentException($"guidance must be a finite number, got {g}.");
        if (Warmup < 0) throw new ArgumentException($"warmup must be 0 or more, got {Warmup}.");
        if (Runs < 1) throw new ArgumentException($"runs must be at least 1, got {Runs}.");
        if (MaxSequenceLength is < 1 or > 512) throw new ArgumentException($"max_sequence_length must be in [1, 512], got {MaxSequenceLength}.");
    }

    /// <summary>
    /// These options with the family's defaults for what was left null, after refusing what the family does not have
    /// (<see cref="ArgumentException"/>, naming the option): T5 options outside SD3 (<see cref="NoT5"/>,
    /// <see cref="CollapseRepeatedText"/> off) and Flux, <see cref="MaxSequenceLength"/> for the UNets, a guidance scale
    /// for a Flux model without guidance embedding (schnell), sizes that are not multiples of 16 (SD3, Flux) or 8 (UNets).
    /// </summary>
    public BenchmarkOptions WithFamilyDefaults(ModelConfigs configs)
    {
        ArgumentNullException.ThrowIfNull(configs);
        string model = $"{configs.Name} is a {configs.PipelineClass}";
        if (configs is not PipelineConfigs && (NoT5 || CollapseRepeatedText is not null))
            throw new ArgumentException($"{(NoT5 ? "--no-t5" : CollapseRepeatedText == true ? "--collapse-text" : "--full-text-sequence")} applies to Stable Diffusion 3 models; {model}.");
        int multiple = configs is UNetPipelineConfigs ? 8 : 16;
        var result = configs switch
        {
            PipelineConfigs => this with { Height = Height ?? 1024, Width = Width ?? 1024, Steps = Steps ?? 40, GuidanceScale = GuidanceScale ?? 4.5, MaxSequenceLength = MaxSequenceLength ?? 256 },
            UNetPipelineConfigs u => MaxSequenceLength is not null
                ? throw new ArgumentException($"--max-sequence-length applies to models with T5 (SD3, Flux); {model}.")
                : this with { Height = Height ?? u.DefaultSize, Width = Width ?? u.DefaultSize, Steps = Steps ?? 50, GuidanceScale = GuidanceScale ?? u.DefaultGuidance },
            FluxPipelineConfigs f => !f.GuidanceEmbeds && GuidanceScale is { } g && g != 0
                ? throw new ArgumentException($"--guidance does not apply to {configs.Name}: its transformer has no guidance embedding (FLUX.1-schnell), and Flux has no CFG.")
                : this with { Height = Height ?? 1024, Width = Width ?? 1024, Steps = Steps ?? f.DefaultSteps, GuidanceScale = GuidanceScale ?? f.DefaultGuidance, MaxSequenceLength = MaxSequenceLength ?? f.DefaultMaxSequenceLength },
            _ => throw new ArgumentException($"No benchmark for {configs.PipelineClass}."),
        };
        if (result.Height % multiple != 0 || result.Width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple} for a {configs.PipelineClass}, got {result.Height}x{result.Width}.");
        return result;
    }
}
