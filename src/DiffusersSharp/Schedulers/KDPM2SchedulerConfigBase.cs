namespace DiffusersSharp.Schedulers;

/// <summary>
/// The config fields of diffusers' <c>KDPM2DiscreteScheduler</c> and <c>KDPM2AncestralDiscreteScheduler</c> (the two
/// constructors take the same arguments with the same defaults: beta_start 0.00085, beta_end 0.012, linear betas).
/// </summary>
public abstract record KDPM2SchedulerConfigBase : BetaScheduleConfig
{
    /// <summary>The KDPM2 beta defaults.</summary>
    protected KDPM2SchedulerConfigBase()
    {
        BetaStart = 0.00085;
        BetaEnd = 0.012;
    }

    /// <summary>Karras sigmas (rho 7) between the interpolated schedule's ends; the timesteps are then rounded.</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Log-linear sigmas.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Beta(0.6, 0.6) quantile sigmas.</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary>Not a constructor argument: kept from a config that has it (Euler's), the lower end of converted sigmas.</summary>
    public double? SigmaMin { get; init; }

    /// <summary>Not a constructor argument: the upper end of converted sigmas when present.</summary>
    public double? SigmaMax { get; init; }
}
