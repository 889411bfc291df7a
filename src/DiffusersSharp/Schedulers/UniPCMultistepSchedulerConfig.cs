namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>UniPCMultistepScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record UniPCMultistepSchedulerConfig : MultistepSolverConfig
{
    /// <summary>Update in data (x0) prediction, UniPC's default; false (noise prediction) is not supported here.</summary>
    public bool PredictX0 { get; init; } = true;

    /// <summary><c>bh1</c> (B(h) = h) or <c>bh2</c> (B(h) = e^h - 1); midpoint / heun / logrho mean bh2, as in diffusers.</summary>
    public string SolverType { get; init; } = "bh2";

    /// <summary>Lower the order on the last steps.</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary>Step indices whose corrector is skipped (UniC after them is not applied).</summary>
    public int[] DisableCorrector { get; init; } = Array.Empty<int>();

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";

    /// <summary>The sigma after the last step: <c>zero</c> or <c>sigma_min</c>.</summary>
    public string FinalSigmasType { get; init; } = "zero";

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }
}
