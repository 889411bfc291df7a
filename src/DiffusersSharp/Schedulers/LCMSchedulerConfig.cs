namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>LCMScheduler</c>; defaults are the Python constructor defaults
/// (Stable Diffusion's scaled_linear betas, unlike most schedulers).</summary>
public sealed record LCMSchedulerConfig : BetaScheduleConfig
{
    /// <summary>LCM's own beta defaults.</summary>
    public LCMSchedulerConfig()
    {
        BetaStart = 0.00085;
        BetaEnd = 0.012;
        BetaSchedule = "scaled_linear";
    }

    /// <summary>Length of the distillation schedule the inference timesteps are picked from (50).</summary>
    public int OriginalInferenceSteps { get; init; } = 50;

    /// <summary>Clamp the predicted x0 to [-clip_sample_range, clip_sample_range].</summary>
    public bool ClipSample { get; init; }

    /// <summary>Bound of <see cref="ClipSample"/>.</summary>
    public double ClipSampleRange { get; init; } = 1.0;

    /// <summary>The alpha product after the last timestep: 1 when set, else alphas_cumprod[0] (LCM's schedule never
    /// reaches it).</summary>
    public bool SetAlphaToOne { get; init; } = true;

    /// <summary>Dynamic thresholding of x0 (not supported here).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Quantile of dynamic thresholding.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Threshold ceiling of dynamic thresholding.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary>Kept for the config's sake: LCM's <c>set_timesteps</c> does not read it (as in diffusers).</summary>
    public string TimestepSpacing { get; init; } = "leading";

    /// <summary>Factor of the timestep in the boundary-condition scalings c_skip / c_out (10).</summary>
    public double TimestepScaling { get; init; } = 10.0;

    /// <summary>Rescale the betas to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }
}
