namespace DiffusersSharp.Schedulers;

/// <summary>
/// The <c>scheduler_config.json</c> fields that diffusers' multistep / singlestep solvers (DPM-Solver++, UniPC, DEIS) all
/// have, with the Python constructors' defaults; each solver's config adds its own.
/// </summary>
public abstract record MultistepSolverConfig : BetaScheduleConfig
{
    /// <summary>Solver order, 1 to 3 (2: DPM-Solver++(2M), UniPC's and DEIS's default).</summary>
    public int SolverOrder { get; init; } = 2;

    /// <summary>Dynamic thresholding of the predicted x0 (not supported here).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary>Karras sigmas (rho 7); the timesteps are then rounded from them.</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Exponentially spaced sigmas.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Beta-distribution spaced sigmas (alpha = beta = 0.6).</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary>Flow-matching sigmas (Sana): sigmas shifted by <see cref="FlowShift"/>, alpha_t = 1 - sigma (DPMSolverMultistepScheduler only here).</summary>
    public bool UseFlowSigmas { get; init; }

    /// <summary>The flow-matching shift of <see cref="UseFlowSigmas"/>.</summary>
    public double FlowShift { get; init; } = 1.0;

    /// <summary>Resolution-dependent shifting (not supported here).</summary>
    public bool UseDynamicShifting { get; init; }

    /// <summary>The time shift of <see cref="UseDynamicShifting"/>.</summary>
    public string TimeShiftType { get; init; } = "exponential";

    /// <summary>Not a constructor argument: diffusers keeps it when the config came from a scheduler that has it
    /// (Euler) and then uses it as the lower end of Karras / exponential / beta sigmas.</summary>
    public double? SigmaMin { get; init; }

    /// <summary>Not a constructor argument: the upper end of Karras / exponential / beta sigmas when present (see <see cref="SigmaMin"/>).</summary>
    public double? SigmaMax { get; init; }
}
