namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>EulerDiscreteScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record EulerDiscreteSchedulerConfig : BetaScheduleConfig
{
    /// <summary><c>linear</c> (np.interp of the training sigmas at the timesteps) or <c>log_linear</c>.</summary>
    public string InterpolationType { get; init; } = "linear";

    /// <summary>Karras sigmas (rho 7) between the schedule's (or the config's) sigma_min and sigma_max.</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Log-linear sigmas between sigma_min and sigma_max.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Beta(0.6, 0.6) quantile sigmas between sigma_min and sigma_max.</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary>Lower end of the Karras / exponential / beta sigmas (default: the schedule's last sigma).</summary>
    public double? SigmaMin { get; init; }

    /// <summary>Upper end of the Karras / exponential / beta sigmas (default: the schedule's first sigma).</summary>
    public double? SigmaMax { get; init; }

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary><c>discrete</c>, or <c>continuous</c> (with v_prediction the timesteps become <c>0.25 * log(sigma)</c>).</summary>
    public string TimestepType { get; init; } = "discrete";

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }

    /// <summary>The sigma after the last step: <c>zero</c> or <c>sigma_min</c> (the smallest training sigma).</summary>
    public string FinalSigmasType { get; init; } = "zero";
}
