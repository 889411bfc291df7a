namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>LMSDiscreteScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record LMSDiscreteSchedulerConfig : BetaScheduleConfig
{
    /// <summary>Karras sigmas (rho 7) between the schedule's smallest and largest sigma.</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Log-linear sigmas.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Beta(0.6, 0.6) quantile sigmas.</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary>Not a constructor argument: diffusers keeps it when the config came from a scheduler that has it
    /// (Euler) and then uses it as the lower end of exponential / beta sigmas.</summary>
    public double? SigmaMin { get; init; }

    /// <summary>Not a constructor argument: the upper end of exponential / beta sigmas when present (see <see cref="SigmaMin"/>).</summary>
    public double? SigmaMax { get; init; }
}
