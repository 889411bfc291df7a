namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>DPMSolverSinglestepScheduler</c>; defaults are the Python constructor
/// defaults (its timesteps are always linspace-spaced: it has no timestep_spacing).</summary>
public sealed record DPMSolverSinglestepSchedulerConfig : BetaScheduleConfig
{
    /// <summary>Order of the singlestep updates, 1 to 3 (the steps cycle through orders 1..solver_order).</summary>
    public int SolverOrder { get; init; } = 2;

    /// <summary>Dynamic thresholding of the predicted x0 (not supported here).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary><c>dpmsolver++</c> or <c>sde-dpmsolver++</c> (the deprecated <c>dpmsolver</c> is not supported here).</summary>
    public string AlgorithmType { get; init; } = "dpmsolver++";

    /// <summary>Second-order update: <c>midpoint</c> or <c>heun</c>.</summary>
    public string SolverType { get; init; } = "midpoint";

    /// <summary>End on lower orders; diffusers turns it on when final_sigmas_type is zero or the steps do not divide by the order.</summary>
    public bool LowerOrderFinal { get; init; }

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

    /// <summary>The sigma after the last step: <c>zero</c> or <c>sigma_min</c>.</summary>
    public string FinalSigmasType { get; init; } = "zero";

    /// <summary>Lower clip of lambda(t) for the timestep range (-inf: none).</summary>
    public double LambdaMinClipped { get; init; } = double.NegativeInfinity;

    /// <summary><c>learned</c> / <c>learned_range</c> when the model also predicts the variance, else null.</summary>
    public string? VarianceType { get; init; }

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
