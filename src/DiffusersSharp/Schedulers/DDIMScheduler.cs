using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Denoising diffusion implicit models (diffusers' <c>DDIMScheduler</c>): deterministic with eta 0 (the default of the
/// pipelines), stochastic with eta &gt; 0. Integer timesteps; the step follows diffusers' formula (12) line by line.
/// </summary>
public sealed class DDIMScheduler : DiffusionSchedulerBase, IEtaStepScheduler
{
    private readonly float _finalAlphaCumprod;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">Thresholding (not implemented here).</exception>
    public DDIMScheduler(DDIMSchedulerConfig? config = null) : this(config ?? new DDIMSchedulerConfig(), 0) { }

    private DDIMScheduler(DDIMSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: false, nameof(DDIMScheduler)))
    {
        Config = config;
        if (config.Thresholding)
            throw new NotSupportedException("DDIMScheduler: thresholding is not implemented in DiffusersSharp; set thresholding to false.");
        if (config.PredictionType is not ("epsilon" or "sample" or "v_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, sample, v_prediction.", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use leading, trailing or linspace.", nameof(config));
        _finalAlphaCumprod = config.SetAlphaToOne ? 1f : AlphasCumprod[0];
        int t = config.NumTrainTimesteps;
        TimestepArray = Enumerable.Range(0, t).Select(i => (float)(t - 1 - i)).ToArray();
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static DDIMScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<DDIMSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public DDIMSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(DDIMScheduler);

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

    /// <inheritdoc/>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null) =>
        Step(modelOutput, timestep, sample, 0.0, false, generator);

    /// <summary>
    /// One DDIM step from <paramref name="timestep"/> to <c>timestep - T / N</c>: predicted x0 (clipped when
    /// configured), direction to x_t, and with <paramref name="eta"/> &gt; 0 noise of std <c>eta * sigma_t</c>:
    /// <paramref name="varianceNoise"/>, or drawn from <paramref name="generator"/> with the model output's shape and dtype.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called.</exception>
    /// <exception cref="ArgumentException">The timestep is not a whole number in [0, T), or both a generator and
    /// variance noise were given.</exception>
    public Tensor Step(Tensor modelOutput, float timestep, Tensor sample, double eta, bool useClippedModelOutput = false,
        Runtime.Generator? generator = null, Tensor? varianceNoise = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        RequireTimesteps();
        int t = WholeTimestep(timestep);
        if (t < 0 || t >= AlphasCumprod.Count)
            throw new ArgumentException($"Timestep {t} is outside [0, {AlphasCumprod.Count}).", nameof(timestep));
        int prevT = t - Config.NumTrainTimesteps / NumInferenceSteps!.Value;

        using var scope = NewDisposeScope();
        var alphaProdT = Scalar(AlphasCumprod[t]);
        var alphaProdTPrev = Scalar(prevT >= 0 ? AlphasCumprod[prevT] : _finalAlphaCumprod);
        var betaProdT = 1 - alphaProdT;

        Tensor predOriginal, predEpsilon;
        switch (Config.PredictionType)
        {
            case "epsilon":
                predOriginal = (sample - betaProdT.pow(0.5) * modelOutput) / alphaProdT.pow(0.5);
                predEpsilon = modelOutput;
                break;
            case "sample":
                predOriginal = modelOutput;
                predEpsilon = (sample - alphaProdT.pow(0.5) * predOriginal) / betaProdT.pow(0.5);
                break;
            default:
                predOriginal = alphaProdT.pow(0.5) * sample - betaProdT.pow(0.5) * modelOutput;
                predEpsilon = alphaProdT.pow(0.5) * modelOutput + betaProdT.pow(0.5) * sample;
                break;
        }
        if (Config.ClipSample) predOriginal = predOriginal.clamp(-Config.ClipSampleRange, Config.ClipSampleRange);

        // _get_variance
        var betaProdTPrev = 1 - alphaProdTPrev;
        var variance = (betaProdTPrev / betaProdT) * (1 - alphaProdT / alphaProdTPrev);
        var stdDevT = variance.pow(0.5) * eta;
        if (useClippedModelOutput)
            predEpsilon = (sample - alphaProdT.pow(0.5) * predOriginal) / betaProdT.pow(0.5);
        var direction = (1 - alphaProdTPrev - stdDevT.pow(2)).pow(0.5) * predEpsilon;
        var prev = alphaProdTPrev.pow(0.5) * predOriginal + direction;
        if (eta > 0)
        {
            if (varianceNoise is not null && generator is not null)
                throw new ArgumentException("Give either a generator or variance noise to the DDIM step, not both.");
            var noise = varianceNoise ?? RandnLike(modelOutput.shape, modelOutput.dtype, modelOutput.device, generator);
            prev = prev + stdDevT * noise;
        }
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary>DDPM's forward process at integer <paramref name="timestep"/>: <c>sqrt(a) x0 + sqrt(1 - a) noise</c>.</summary>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep) =>
        AddNoiseByAlphas(originalSamples, noise, timestep);
}
