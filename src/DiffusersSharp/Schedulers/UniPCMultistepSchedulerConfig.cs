namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>UniPCMultistepScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record UniPCMultistepSchedulerConfig : BetaScheduleConfig
{
    /// <summary>Order of the predictor / corrector, 1 to 3 (2 for guided sampling).</summary>
    public int SolverOrder { get; init; } = 2;

    /// <summary>Dynamic thresholding of the predicted x0 (not supported here).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary>Update in data (x0) prediction, UniPC's default; false (noise prediction) is not supported here.</summary>
    public bool PredictX0 { get; init; } = true;

    /// <summary><c>bh1</c> (B(h) = h) or <c>bh2</c> (B(h) = e^h - 1); midpoint / heun / logrho mean bh2, as in diffusers.</summary>
    public string SolverType { get; init; } = "bh2";

    /// <summary>Lower the order on the last steps.</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary>Step indices whose corrector is skipped (UniC after them is not applied).</summary>
    public int[] DisableCorrector { get; init; } = Array.Empty<int>();

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

    /// <summary>The sigma after the last step: <c>zero</c> or <c>sigma_min</c>.</summary>
    public string FinalSigmasType { get; init; } = "zero";

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }

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
