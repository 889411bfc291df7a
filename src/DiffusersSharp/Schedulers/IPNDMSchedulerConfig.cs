namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>IPNDMScheduler</c>; defaults are the Python constructor defaults.
/// Other keys of a swapped-in config (beta schedule, prediction type...) are ignored, as diffusers' <c>from_config</c>
/// ignores them for this class.</summary>
public sealed record IPNDMSchedulerConfig
{
    /// <summary>Number of training timesteps (1000): the schedule the constructor sets up before <c>set_timesteps</c>.</summary>
    public int NumTrainTimesteps { get; init; } = 1000;

    /// <summary>Explicit betas replacing the <c>sin(t * pi / 2)²</c> schedule (as diffusers: the timesteps are then
    /// one fewer than these betas, whatever the number of steps).</summary>
    public double[]? TrainedBetas { get; init; }
}
