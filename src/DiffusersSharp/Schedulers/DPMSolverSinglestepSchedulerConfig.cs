namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>DPMSolverSinglestepScheduler</c>; defaults are the Python constructor
/// defaults (its timesteps are always linspace-spaced: it has no timestep_spacing).</summary>
public sealed record DPMSolverSinglestepSchedulerConfig : MultistepSolverConfig
{
    /// <summary><c>dpmsolver++</c> or <c>sde-dpmsolver++</c> (the deprecated <c>dpmsolver</c> is not supported here).</summary>
    public string AlgorithmType { get; init; } = "dpmsolver++";

    /// <summary>Second-order update: <c>midpoint</c> or <c>heun</c>.</summary>
    public string SolverType { get; init; } = "midpoint";

    /// <summary>End on lower orders; diffusers turns it on when final_sigmas_type is zero or the steps do not divide by the order.</summary>
    public bool LowerOrderFinal { get; init; }

    /// <summary>The sigma after the last step: <c>zero</c> or <c>sigma_min</c>.</summary>
    public string FinalSigmasType { get; init; } = "zero";

    /// <summary>Lower clip of lambda(t) for the timestep range (-inf: none).</summary>
    public double LambdaMinClipped { get; init; } = double.NegativeInfinity;

    /// <summary><c>learned</c> / <c>learned_range</c> when the model also predicts the variance, else null.</summary>
    public string? VarianceType { get; init; }
}
