namespace DiffusersSharp.Schedulers;

/// <summary>
/// The config fields diffusers' EDM schedulers (<c>EDMEulerScheduler</c>, <c>EDMDPMSolverMultistepScheduler</c>) share,
/// with the Python constructors' defaults: the sigma range and schedule of Karras et al. 2022 (EDM) and the data's standard
/// deviation used by the preconditioning. No beta schedule: these schedulers work on sigmas alone.
/// </summary>
public abstract record EDMSchedulerConfigBase
{
    /// <summary>Smallest sigma of the schedule (0.002 in the EDM paper). Null only when the config came from another
    /// scheduler that saved <c>sigma_min: null</c>; the scheduler then refuses it, as diffusers fails on it.</summary>
    public double? SigmaMin { get; init; } = 0.002;

    /// <summary>Largest sigma of the schedule (80 in the EDM paper; Playground v2.5 and CosXL use other values).</summary>
    public double? SigmaMax { get; init; } = 80.0;

    /// <summary>The standard deviation of the data distribution (0.5; CosXL 1.0).</summary>
    public double SigmaData { get; init; } = 0.5;

    /// <summary><c>karras</c> (the EDM schedule, exponent <see cref="Rho"/>) or <c>exponential</c> (log-linear, as CosXL).</summary>
    public string SigmaSchedule { get; init; } = "karras";

    /// <summary>Number of training timesteps (1000); only the length of the schedule built at construction.</summary>
    public int NumTrainTimesteps { get; init; } = 1000;

    /// <summary>What the model predicts: <c>epsilon</c> or <c>v_prediction</c>.</summary>
    public string PredictionType { get; init; } = "epsilon";

    /// <summary>The exponent of the Karras schedule (7).</summary>
    public double Rho { get; init; } = 7.0;

    /// <summary>The sigma after the last step: <c>zero</c> or <c>sigma_min</c>.</summary>
    public string? FinalSigmasType { get; init; } = "zero";
}
