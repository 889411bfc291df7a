namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>DPMSolverMultistepScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record DPMSolverMultistepSchedulerConfig : BetaScheduleConfig
{
    /// <summary>Multistep order, 1 to 3 (2: DPM-Solver++(2M)).</summary>
    public int SolverOrder { get; init; } = 2;

    /// <summary>Dynamic thresholding of the predicted x0 (not supported here).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary><c>dpmsolver++</c> or <c>sde-dpmsolver++</c> (the deprecated <c>dpmsolver</c> / <c>sde-dpmsolver</c> are not supported here).</summary>
    public string AlgorithmType { get; init; } = "dpmsolver++";

    /// <summary>Second-order update: <c>midpoint</c> or <c>heun</c>.</summary>
    public string SolverType { get; init; } = "midpoint";

    /// <summary>Lower the order on the last steps when there are fewer than 15.</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary>A first-order (Euler) last step.</summary>
    public bool EulerAtFinal { get; init; }

    /// <summary>Karras sigmas (rho 7); the timesteps are then rounded from them.</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Log-linear sigmas.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Beta(0.6, 0.6) quantile sigmas.</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary>Uniform log-SNR (lambda) steps (Lu et al.).</summary>
    public bool UseLuLambdas { get; init; }

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

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }

    /// <summary>Resolution-dependent shifting of flow sigmas (not supported here).</summary>
    public bool UseDynamicShifting { get; init; }

    /// <summary>Kind of dynamic shift.</summary>
    public string TimeShiftType { get; init; } = "exponential";

    /// <summary>Not a constructor argument: diffusers keeps it when the config came from a scheduler that has it
    /// (Euler) and then uses it as the lower end of Karras / exponential / beta sigmas.</summary>
    public double? SigmaMin { get; init; }

    /// <summary>Not a constructor argument: the upper end of Karras / exponential / beta sigmas when present (see <see cref="SigmaMin"/>).</summary>
    public double? SigmaMax { get; init; }
}
