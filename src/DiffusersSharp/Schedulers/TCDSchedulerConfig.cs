namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>TCDScheduler</c>; defaults are the Python constructor defaults
/// (Stable Diffusion's scaled_linear betas, as LCM).</summary>
public sealed record TCDSchedulerConfig : BetaScheduleConfig
{
    /// <summary>TCD's own beta defaults.</summary>
    public TCDSchedulerConfig()
    {
        BetaStart = 0.00085;
        BetaEnd = 0.012;
        BetaSchedule = "scaled_linear";
    }

    /// <summary>Length of the distillation schedule the inference timesteps are picked from (50).</summary>
    public int OriginalInferenceSteps { get; init; } = 50;

    /// <summary>Kept for the config's sake: TCD's step does not clip (as in diffusers).</summary>
    public bool ClipSample { get; init; }

    /// <summary>Kept for the config's sake (see <see cref="ClipSample"/>).</summary>
    public double ClipSampleRange { get; init; } = 1.0;

    /// <summary>The alpha product after the last timestep: 1 when set, else alphas_cumprod[0] (TCD's schedule never
    /// reaches it).</summary>
    public bool SetAlphaToOne { get; init; } = true;

    /// <summary>Kept for the config's sake: TCD's step does not threshold (as in diffusers).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary>Kept for the config's sake: TCD's <c>set_timesteps</c> does not read it (as in diffusers).</summary>
    public string TimestepSpacing { get; init; } = "leading";

    /// <summary>Kept for the config's sake: TCD's step does not read it (as in diffusers).</summary>
    public double TimestepScaling { get; init; } = 10.0;

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }
}
