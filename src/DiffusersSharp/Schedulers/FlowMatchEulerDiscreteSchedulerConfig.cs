namespace DiffusersSharp.Schedulers;

/// <summary>
/// <c>scheduler/scheduler_config.json</c> of a <c>FlowMatchEulerDiscreteScheduler</c>. Defaults are the Python constructor
/// defaults (the SD3 / 3.5 hub configs set only <c>shift: 3.0</c>).
/// </summary>
public sealed record FlowMatchEulerDiscreteSchedulerConfig
{
    /// <summary>Number of training timesteps (1000).</summary>
    public int NumTrainTimesteps { get; init; } = 1000;

    /// <summary>Static timestep shift (1.0; SD3 uses 3.0).</summary>
    public double Shift { get; init; } = 1.0;

    /// <summary>Resolution-dependent shifting: <c>set_timesteps</c> then needs <c>mu</c>.</summary>
    public bool UseDynamicShifting { get; init; }

    /// <summary>Shift at <see cref="BaseImageSeqLen"/> for <see cref="FlowMatchEulerDiscreteScheduler.CalculateShift"/>.</summary>
    public double BaseShift { get; init; } = 0.5;

    /// <summary>Shift at <see cref="MaxImageSeqLen"/> for <see cref="FlowMatchEulerDiscreteScheduler.CalculateShift"/>.</summary>
    public double MaxShift { get; init; } = 1.15;

    /// <summary>Image token count at which the shift is <see cref="BaseShift"/>.</summary>
    public int BaseImageSeqLen { get; init; } = 256;

    /// <summary>Image token count at which the shift is <see cref="MaxShift"/>.</summary>
    public int MaxImageSeqLen { get; init; } = 4096;

    /// <summary>Use <c>1 - sigma</c> (Mochi) and a terminal sigma of 1.</summary>
    public bool InvertSigmas { get; init; }

    /// <summary>When set (non-zero), stretches the schedule so that its last sigma equals this value.</summary>
    public double? ShiftTerminal { get; init; }

    /// <summary>Convert the shifted sigmas to a Karras schedule (rho 7).</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Convert the shifted sigmas to an exponential (log-linear) schedule.</summary>
    public bool UseExponentialSigmas { get; init; }

    /// <summary>Convert the shifted sigmas to a beta(0.6, 0.6) quantile schedule.</summary>
    public bool UseBetaSigmas { get; init; }

    /// <summary>"exponential" (<c>e^mu / (e^mu + 1/t - 1)</c>) or "linear" (<c>mu / (mu + 1/t - 1)</c>) dynamic shifting.</summary>
    public string TimeShiftType { get; init; } = "exponential";

    /// <summary>Stochastic sampling: re-noise the predicted x0 at each step instead of the Euler update.</summary>
    public bool StochasticSampling { get; init; }
}
