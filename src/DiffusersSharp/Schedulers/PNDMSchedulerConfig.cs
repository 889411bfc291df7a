namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>PNDMScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record PNDMSchedulerConfig : BetaScheduleConfig
{
    /// <summary>Skip the Runge-Kutta warm-up (PLMS only, with the duplicated second timestep); Stable Diffusion sets it.</summary>
    public bool SkipPrkSteps { get; init; }

    /// <summary>The alpha product "before" the first timestep: 1 when set, else alphas_cumprod[0] (false).</summary>
    public bool SetAlphaToOne { get; init; }

    /// <summary><c>leading</c>, <c>linspace</c> or <c>trailing</c>.</summary>
    public string TimestepSpacing { get; init; } = "leading";
}
