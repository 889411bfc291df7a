namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>DEISMultistepScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record DEISMultistepSchedulerConfig : BetaScheduleConfig
{
    /// <summary>Order of the multistep update, 1 to 3 (2 for guided sampling).</summary>
    public int SolverOrder { get; init; } = 2;

    /// <summary>Dynamic thresholding of the predicted x0 (not supported here).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary><c>deis</c> (dpmsolver / dpmsolver++ mean deis, as in diffusers).</summary>
    public string AlgorithmType { get; init; } = "deis";

    /// <summary><c>logrho</c> (midpoint / heun / bh1 / bh2 mean logrho, as in diffusers).</summary>
    public string SolverType { get; init; } = "logrho";

    /// <summary>Lower the order on the last two steps of schedules shorter than 15 steps.</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary>Karras sigmas (rho 7); the timesteps are then rounded from them.</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Log-linear sigmas.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Beta(0.6, 0.6) quantile sigmas.</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary>Flow-matching sigmas (not supported here).</summary>
    public bool UseFlowSigmas { get; init; }

    /// <summary>Shift of the flow sigmas.</summary>
    public double FlowShift { get; init; } = 1.0;

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary>Resolution-dependent shifting of flow sigmas (not supported here).</summary>
    public bool UseDynamicShifting { get; init; }

    /// <summary>Kind of dynamic shift.</summary>
    public string TimeShiftType { get; init; } = "exponential";

    /// <summary>Not a constructor argument: kept from a config that has it (Euler's), the lower end of Karras /
    /// exponential / beta sigmas.</summary>
    public double? SigmaMin { get; init; }

    /// <summary>Not a constructor argument: the upper end of Karras / exponential / beta sigmas when present.</summary>
    public double? SigmaMax { get; init; }
}
