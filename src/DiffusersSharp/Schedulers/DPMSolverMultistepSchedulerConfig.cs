namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>DPMSolverMultistepScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record DPMSolverMultistepSchedulerConfig : MultistepSolverConfig
{
    /// <summary><c>dpmsolver++</c> or <c>sde-dpmsolver++</c> (the deprecated <c>dpmsolver</c> / <c>sde-dpmsolver</c> are not supported here).</summary>
    public string AlgorithmType { get; init; } = "dpmsolver++";

    /// <summary>Second-order update: <c>midpoint</c> or <c>heun</c>.</summary>
    public string SolverType { get; init; } = "midpoint";

    /// <summary>Lower the order on the last steps when there are fewer than 15.</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary>A first-order (Euler) last step.</summary>
    public bool EulerAtFinal { get; init; }

    /// <summary>Uniform log-SNR (lambda) steps (Lu et al.).</summary>
    public bool UseLuLambdas { get; init; }

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
}
