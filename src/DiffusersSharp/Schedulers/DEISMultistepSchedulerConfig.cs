namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>DEISMultistepScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record DEISMultistepSchedulerConfig : MultistepSolverConfig
{
    /// <summary><c>deis</c> (dpmsolver / dpmsolver++ mean deis, as in diffusers).</summary>
    public string AlgorithmType { get; init; } = "deis";

    /// <summary><c>logrho</c> (midpoint / heun / bh1 / bh2 mean logrho, as in diffusers).</summary>
    public string SolverType { get; init; } = "logrho";

    /// <summary>Lower the order on the last two steps of schedules shorter than 15 steps.</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary><c>linspace</c>, <c>leading</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "linspace";
}
