namespace DiffusersSharp.Schedulers;

/// <summary>
/// The config fields shared by the DDPM-family schedulers (the training beta schedule, the prediction type, the
/// timestep offset). Defaults are the Python constructor defaults; each scheduler's record adds its own fields.
/// </summary>
public abstract record BetaScheduleConfig
{
    /// <summary>Number of training timesteps (1000).</summary>
    public int NumTrainTimesteps { get; init; } = 1000;

    /// <summary>First beta (0.0001; Stable Diffusion uses 0.00085).</summary>
    public double BetaStart { get; init; } = 0.0001;

    /// <summary>Last beta (0.02; Stable Diffusion uses 0.012).</summary>
    public double BetaEnd { get; init; } = 0.02;

    /// <summary><c>linear</c>, <c>scaled_linear</c> (Stable Diffusion) or <c>squaredcos_cap_v2</c>.</summary>
    public string BetaSchedule { get; init; } = "linear";

    /// <summary>Explicit betas, one per training timestep, replacing <see cref="BetaSchedule"/>.</summary>
    public double[]? TrainedBetas { get; init; }

    /// <summary>What the model predicts: <c>epsilon</c>, <c>v_prediction</c> or <c>sample</c> (support varies by scheduler).</summary>
    public string PredictionType { get; init; } = "epsilon";

    /// <summary>Offset added to the inference timesteps with the "leading" spacing (Stable Diffusion uses 1).</summary>
    public int StepsOffset { get; init; }
}
