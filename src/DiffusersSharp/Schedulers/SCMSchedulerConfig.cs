namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>SCMScheduler</c> (SANA-Sprint), with the Python constructor's defaults.</summary>
public sealed record SCMSchedulerConfig
{
    /// <summary>Number of training timesteps (1000; bounds the step count).</summary>
    public int NumTrainTimesteps { get; init; } = 1000;

    /// <summary>The model's parameterisation; only "trigflow" exists.</summary>
    public string PredictionType { get; init; } = "trigflow";

    /// <summary>The data's standard deviation: latents are scaled by it, and each step's fresh noise too (0.5).</summary>
    public double SigmaData { get; init; } = 0.5;
}
