namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>HeunDiscreteScheduler</c>; defaults are the Python constructor defaults
/// (beta_start 0.00085 and beta_end 0.012, unlike the other schedulers).</summary>
public sealed record HeunDiscreteSchedulerConfig : BetaScheduleConfig
{
    /// <summary>Heun's own beta defaults.</summary>
    public HeunDiscreteSchedulerConfig()
    {
        BetaStart = 0.00085;
        BetaEnd = 0.012;
    }

    /// <summary>Karras sigmas (rho 7) between the interpolated schedule's ends.</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Log-linear sigmas.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Beta(0.6, 0.6) quantile sigmas.</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary>Clip the predicted x0 to [-clip_sample_range, clip_sample_range].</summary>
    public bool ClipSample { get; init; }

    /// <summary>The clipping bound.</summary>
    public double ClipSampleRange { get; init; } = 1.0;

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary>Not a constructor argument: kept from a config that has it (Euler's), the lower end of converted sigmas.</summary>
    public double? SigmaMin { get; init; }

    /// <summary>Not a constructor argument: the upper end of converted sigmas when present.</summary>
    public double? SigmaMax { get; init; }
}
