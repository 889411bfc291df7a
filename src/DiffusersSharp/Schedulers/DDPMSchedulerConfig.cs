namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>DDPMScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record DDPMSchedulerConfig : BetaScheduleConfig
{
    /// <summary>The step's noise variance: <c>fixed_small</c> (default), <c>fixed_small_log</c>, <c>fixed_large</c>,
    /// <c>fixed_large_log</c>, <c>learned</c> or <c>learned_range</c> (the last two read the second half of a
    /// model output with twice the sample's channels).</summary>
    public string VarianceType { get; init; } = "fixed_small";

    /// <summary>Clamp the predicted x0 to [-clip_sample_range, clip_sample_range] (true).</summary>
    public bool ClipSample { get; init; } = true;

    /// <summary>Dynamic thresholding of x0 (not supported here).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Bound of <see cref="ClipSample"/>.</summary>
    public double ClipSampleRange { get; init; } = 1.0;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary><c>leading</c>, <c>trailing</c> or <c>linspace</c>.</summary>
    public string TimestepSpacing { get; init; } = "leading";

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }
}
