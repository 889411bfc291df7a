using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Denoising diffusion probabilistic models (Ho et al. 2020; diffusers' <c>DDPMScheduler</c>): ancestral sampling of
/// the posterior q(x_{t-1} | x_t, x0) with fresh noise from the generator at every step but the one from timestep 0.
/// Integer timesteps; the step follows diffusers' formulas (7) and (15) line by line, with its variance types.
/// </summary>
public sealed class DDPMScheduler : DiffusionSchedulerBase
{
    private static readonly string[] VarianceTypes =
        { "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range" };

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">Thresholding (not implemented here).</exception>
    public DDPMScheduler(DDPMSchedulerConfig? config = null) : this(config ?? new DDPMSchedulerConfig(), 0) { }

    private DDPMScheduler(DDPMSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: false, nameof(DDPMScheduler)))
    {
        Config = config;
        if (config.Thresholding)
            throw new NotSupportedException("DDPMScheduler: thresholding is not implemented in DiffusersSharp; set thresholding to false.");
        if (config.PredictionType is not ("epsilon" or "sample" or "v_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, sample, v_prediction for DDPMScheduler.", nameof(config));
        if (Array.IndexOf(VarianceTypes, config.VarianceType) < 0)
            throw new ArgumentException($"variance_type \"{config.VarianceType}\" must be one of {string.Join(", ", VarianceTypes)}.", nameof(config));
        if (Array.IndexOf(TimestepSpacings.Known, config.TimestepSpacing) < 0)
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use leading, trailing or linspace.", nameof(config));
        int t = config.NumTrainTimesteps;
        TimestepArray = Enumerable.Range(0, t).Select(i => (float)(t - 1 - i)).ToArray();
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static DDPMScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<DDPMSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public DDPMSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(DDPMScheduler);

    /// <summary>1.0.</summary>
    public override double InitNoiseSigma => 1.0;

    private protected override ScalarType TimestepDtype => ScalarType.Int64;

    /// <summary>diffusers' <c>set_timesteps</c>: int64 timesteps by the configured spacing.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        long[] ts = TimestepSpacings.Int64(Config.TimestepSpacing, Config.NumTrainTimesteps, numInferenceSteps, Config.StepsOffset);
        InstallSchedule(Array.ConvertAll(ts, v => (float)v), device);
        NumInferenceSteps = numInferenceSteps;
    }

    /// <summary>diffusers' <c>previous_timestep</c>: the next entry of the schedule (the first match of
    /// <paramref name="t"/>), or -1 after the last one.</summary>
    private int PreviousTimestep(float t)
    {
        int index = Array.IndexOf(TimestepArray, t);
        if (index < 0)
            throw new ArgumentException($"Timestep {t:R} is not one of the DDPMScheduler timesteps; pass a value of TimestepValues.", "timestep");
        return index == TimestepArray.Length - 1 ? -1 : (int)TimestepArray[index + 1];
    }

    /// <summary>
    /// One DDPM step from <paramref name="timestep"/> to the next timestep of the schedule: x0 from the model output
    /// (clipped when configured), the posterior mean, and for <paramref name="timestep"/> &gt; 0 noise drawn from
    /// <paramref name="generator"/> (the model output's shape and dtype) scaled by the configured variance. With the
    /// <c>learned</c> / <c>learned_range</c> variance types the model output has twice the sample's channels, the
    /// second half being the predicted variance.
    /// </summary>
    /// <exception cref="ArgumentException">The timestep is not in the schedule, or a learned variance type without
    /// the doubled channels.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int t = WholeTimestep(timestep);
        if (t < 0 || t >= AlphasCumprod.Count)
            throw new ArgumentException($"Timestep {t} is outside [0, {AlphasCumprod.Count}).", nameof(timestep));
        bool learned = Config.VarianceType is "learned" or "learned_range";
        bool split = learned && modelOutput.dim() > 1 && sample.dim() > 1 && modelOutput.shape[1] == sample.shape[1] * 2;
        if (learned && !split)
            throw new ArgumentException($"variance_type {Config.VarianceType} needs a model output with twice the sample's channels " +
                $"({sample.shape[1] * 2}); got {modelOutput.shape[1]}.", nameof(modelOutput));
        int prevT = PreviousTimestep(timestep);

        using var scope = NewDisposeScope();
        Tensor? predictedVariance = null;
        if (split)
        {
            var parts = modelOutput.split(sample.shape[1], 1);
            (modelOutput, predictedVariance) = (parts[0], parts[1]);
        }
        var alphaProdT = Scalar(AlphasCumprod[t]);
        var alphaProdTPrev = Scalar(prevT >= 0 ? AlphasCumprod[prevT] : 1f);
        var betaProdT = 1 - alphaProdT;
        var betaProdTPrev = 1 - alphaProdTPrev;
        var currentAlphaT = alphaProdT / alphaProdTPrev;
        var currentBetaT = 1 - currentAlphaT;

        var predOriginal = Config.PredictionType switch
        {
            "epsilon" => (sample - betaProdT.pow(0.5) * modelOutput) / alphaProdT.pow(0.5),
            "sample" => modelOutput.alias(),
            _ => alphaProdT.pow(0.5) * sample - betaProdT.pow(0.5) * modelOutput,
        };
        if (Config.ClipSample) predOriginal = predOriginal.clamp(-Config.ClipSampleRange, Config.ClipSampleRange);

        var predOriginalCoeff = alphaProdTPrev.pow(0.5) * currentBetaT / betaProdT;
        var currentSampleCoeff = currentAlphaT.pow(0.5) * betaProdTPrev / betaProdT;
        var prev = predOriginalCoeff * predOriginal + currentSampleCoeff * sample;
        if (t > 0)
        {
            var noise = RandnLike(modelOutput.shape, modelOutput.dtype, modelOutput.device, generator);
            var variance = Variance(alphaProdT, alphaProdTPrev, currentBetaT, predictedVariance);
            var scaled = Config.VarianceType switch
            {
                "fixed_small_log" => variance * noise,
                "learned_range" => (0.5 * variance).exp() * noise,
                _ => variance.pow(0.5) * noise,
            };
            prev = prev + scaled;
        }
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>_get_variance</c> for the configured variance type.</summary>
    private Tensor Variance(Tensor alphaProdT, Tensor alphaProdTPrev, Tensor currentBetaT, Tensor? predictedVariance)
    {
        var variance = (1 - alphaProdTPrev) / (1 - alphaProdT) * currentBetaT;
        variance = variance.clamp_min(1e-20);
        switch (Config.VarianceType)
        {
            case "fixed_small":
                return variance;
            case "fixed_small_log":
                return (0.5 * variance.log()).exp();
            case "fixed_large":
                return currentBetaT;
            case "fixed_large_log":
                return currentBetaT.log();
            case "learned":
                return predictedVariance!;
            default:
                var minLog = variance.log();
                var maxLog = currentBetaT.log();
                var frac = (predictedVariance! + 1) / 2;
                return frac * maxLog + (1 - frac) * minLog;
        }
    }

    /// <summary>DDPM's forward process at integer <paramref name="timestep"/>: <c>sqrt(a) x0 + sqrt(1 - a) noise</c>.</summary>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep) =>
        AddNoiseByAlphas(originalSamples, noise, timestep);
}
