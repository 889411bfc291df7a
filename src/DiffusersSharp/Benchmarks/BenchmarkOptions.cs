using DiffusersSharp.Pipelines;

namespace DiffusersSharp.Benchmarks;

/// <summary>What <see cref="PipelineBenchmark"/> measures (defaults: diffusers' reference run, SD3.5-Medium at 1024x1024, 40 steps).</summary>
public sealed record BenchmarkOptions
{
    /// <summary>A pipeline folder or hub repo id to load; exactly one of this and <see cref="RandomWeights"/>.</summary>
    public string? Model { get; init; }

    /// <summary>Random weights instead of a model: a preset (<c>sd3.5-medium</c>) or a pipeline folder whose configs to use.</summary>
    public string? RandomWeights { get; init; }

    /// <summary>"cpu", "cuda" or "cuda:N".</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>float32, bfloat16 or float16.</summary>
    public string Dtype { get; init; } = "float32";

    /// <summary>Image height in pixels.</summary>
    public int Height { get; init; } = 1024;

    /// <summary>Image width in pixels.</summary>
    public int Width { get; init; } = 1024;

    /// <summary>Denoising steps of the pipeline run.</summary>
    public int Steps { get; init; } = 40;

    /// <summary>Guidance scale of the pipeline run (above 1: CFG, batch 2).</summary>
    public double GuidanceScale { get; init; } = 4.5;

    /// <summary>Untimed runs before the timed ones, per measure.</summary>
    public int Warmup { get; init; } = 1;

    /// <summary>Timed runs per measure (the median is reported).</summary>
    public int Runs { get; init; } = 3;

    /// <summary>T5 tokens: the text sequence is 77 + this (333 by default).</summary>
    public int MaxSequenceLength { get; init; } = 256;

    /// <summary>Leave T5 out (its embeddings are zeros; the text sequence keeps its length).</summary>
    public bool NoT5 { get; init; }

    /// <summary>
    /// With <see cref="NoT5"/>: whether the pipeline runs T5's identical zero rows as one counted attention key
    /// (<see cref="Pipelines.StableDiffusion3.StableDiffusion3Request.CollapseRepeatedText"/>, the default); false times
    /// the full sequence, as diffusers runs it.
    /// </summary>
    public bool CollapseRepeatedText { get; init; } = true;

    /// <summary>Model CPU offload.</summary>
    public OffloadMode Offload { get; init; } = OffloadMode.None;

    /// <summary>Seed of the pipeline's generator (diffusers' reference uses 123456).</summary>
    public long Seed { get; init; } = 123456;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        if ((Model is null) == (RandomWeights is null))
            throw new ArgumentException("Give exactly one of a model (folder or hub id) and random weights (a preset such as sd3.5-medium).");
        if (Height <= 0 || Width <= 0 || Height % 16 != 0 || Width % 16 != 0)
            throw new ArgumentException($"height and width must be positive multiples of 16, got {Height}x{Width}.");
        if (Steps < 1) throw new ArgumentException($"steps must be at least 1, got {Steps}.");
        if (!double.IsFinite(GuidanceScale)) throw new ArgumentException($"guidance must be a finite number, got {GuidanceScale}.");
        if (Warmup < 0) throw new ArgumentException($"warmup must be 0 or more, got {Warmup}.");
        if (Runs < 1) throw new ArgumentException($"runs must be at least 1, got {Runs}.");
        if (MaxSequenceLength is < 1 or > 512) throw new ArgumentException($"max_sequence_length must be in [1, 512], got {MaxSequenceLength}.");
    }
}
