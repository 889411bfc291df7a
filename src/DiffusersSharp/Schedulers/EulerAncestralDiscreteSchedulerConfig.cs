namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>EulerAncestralDiscreteScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record EulerAncestralDiscreteSchedulerConfig : BetaScheduleConfig
{
    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }
}
