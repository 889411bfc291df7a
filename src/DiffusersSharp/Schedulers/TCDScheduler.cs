using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Trajectory consistency distillation's strategic stochastic sampling (Zheng et al. 2024; diffusers'
/// <c>TCDScheduler</c>), for TCD-distilled models and TCD LoRAs. Timesteps as LCM (picked from the distillation
/// schedule of <c>original_inference_steps</c>); each step maps the sample to x0 and re-noises it to the intermediate
/// timestep <c>s = floor((1 - gamma) * t_prev)</c>, then, with gamma (diffusers' <c>eta</c>) &gt; 0 and except on the
/// last step, forward-diffuses it from s to t_prev with fresh noise. gamma 0 is deterministic; the
/// <see cref="Step(Tensor, float, Tensor, Runtime.Generator?)"/> overload uses diffusers' default 0.3, while the
/// pipelines pass the request's eta (diffusers' <c>eta</c> argument of the pipeline, 0 unless given).
/// </summary>
public sealed class TCDScheduler : DiffusionSchedulerBase, IEtaStepScheduler
{
    /// <summary>diffusers' default <c>eta</c> (gamma) of <c>TCDScheduler.step</c>.</summary>
    public const double DefaultGamma = 0.3;

    private readonly float _finalAlphaCumprod;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    public TCDScheduler(TCDSchedulerConfig? config = null) : this(config ?? new TCDSchedulerConfig(), 0) { }

    private TCDScheduler(TCDSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: false, nameof(TCDScheduler)))
    {
        Config = config;
        if (config.PredictionType is not ("epsilon" or "sample" or "v_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, sample, v_prediction for TCDScheduler.", nameof(config));
        if (config.OriginalInferenceSteps < 1 || config.OriginalInferenceSteps > config.NumTrainTimesteps)
            throw new ArgumentException($"original_inference_steps {config.OriginalInferenceSteps} must be between 1 and num_train_timesteps ({config.NumTrainTimesteps}).", nameof(config));
        _finalAlphaCumprod = config.SetAlphaToOne ? 1f : AlphasCumprod[0];
        int t = config.NumTrainTimesteps;
        TimestepArray = Enumerable.Range(0, t).Select(i => (float)(t - 1 - i)).ToArray();
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static TCDScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<TCDSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public TCDSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(TCDScheduler);

    /// <summary>1.0.</summary>
    public override double InitNoiseSigma => 1.0;

    /// <summary>Index of the next step, or null before the first step.</summary>
    public int? StepIndex { get; private set; }

    private protected override ScalarType TimestepDtype => ScalarType.Int64;

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c>: LCM's pick from the distillation schedule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">More steps than original_inference_steps (or than the training steps).</exception>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        int original = Config.OriginalInferenceSteps;
        if (numInferenceSteps > original)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps,
                $"TCDScheduler picks its timesteps from original_inference_steps ({original}); use at most that many steps.");
        InstallSchedule(LCMScheduler.DistillationTimesteps(Config.NumTrainTimesteps, original, numInferenceSteps), device);
        StepIndex = null;
        NumInferenceSteps = numInferenceSteps;
    }

    /// <summary>One step with diffusers' default gamma (<see cref="DefaultGamma"/>), noise from <paramref name="generator"/>.</summary>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null) =>
        Step(modelOutput, timestep, sample, DefaultGamma, false, generator);

    /// <summary>
    /// One TCD step with gamma <paramref name="eta"/> in [0, 1]: x0 and epsilon from the model output, the sample
    /// re-noised to <c>s = floor((1 - eta) * t_prev)</c>, and for <paramref name="eta"/> &gt; 0 (except on the last
    /// step) <c>sqrt(a_prev / a_s) * x_s + sqrt(1 - a_prev / a_s) * noise</c>, the noise being
    /// <paramref name="varianceNoise"/> or drawn from <paramref name="generator"/> with the model output's shape.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    /// <exception cref="ArgumentException">The timestep is not in the schedule, eta is outside [0, 1],
    /// <paramref name="useClippedModelOutput"/> is set (TCD has no such option), or both a generator and variance
    /// noise were given.</exception>
    public Tensor Step(Tensor modelOutput, float timestep, Tensor sample, double eta, bool useClippedModelOutput = false,
        Runtime.Generator? generator = null, Tensor? varianceNoise = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        RequireTimesteps();
        if (!(eta >= 0 && eta <= 1))
            throw new ArgumentException($"TCDScheduler: eta (gamma) must be in [0, 1]; got {eta}.", nameof(eta));
        if (useClippedModelOutput)
            throw new ArgumentException("TCDScheduler has no use_clipped_model_output option.", nameof(useClippedModelOutput));
        if (varianceNoise is not null && generator is not null)
            throw new ArgumentException("Give either a generator or variance noise to the TCD step, not both.");
        int t = WholeTimestep(timestep);
        if (t < 0 || t >= AlphasCumprod.Count)
            throw new ArgumentException($"Timestep {t} is outside [0, {AlphasCumprod.Count}).", nameof(timestep));
        StepIndex ??= BeginIndex ?? TimestepIndex.Find(TimestepArray, timestep, nameof(TCDScheduler));
        int i = StepIndex.Value;
        if (i >= TimestepArray.Length)
            throw new InvalidOperationException($"TCDScheduler: all {NumInferenceSteps} steps are done; call SetTimesteps again.");
        int prevT = i + 1 < TimestepArray.Length ? (int)TimestepArray[i + 1] : 0;
        // torch.floor((1 - eta) * prev_timestep): a Python float times an int64 tensor, computed in float32.
        int s = (int)MathF.Floor((float)(1 - eta) * prevT);

        using var scope = NewDisposeScope();
        var alphaProdT = Scalar(AlphasCumprod[t]);
        var betaProdT = 1 - alphaProdT;
        var alphaProdTPrev = Scalar(prevT >= 0 ? AlphasCumprod[prevT] : _finalAlphaCumprod);
        var alphaProdS = Scalar(AlphasCumprod[s]);
        var betaProdS = 1 - alphaProdS;

        Tensor predOriginal, predEpsilon;
        switch (Config.PredictionType)
        {
            case "epsilon":
                predOriginal = (sample - betaProdT.sqrt() * modelOutput) / alphaProdT.sqrt();
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
        var predNoised = alphaProdS.sqrt() * predOriginal + betaProdS.sqrt() * predEpsilon;
        Tensor prev = predNoised;
        if (eta > 0 && i != NumInferenceSteps!.Value - 1)
        {
            var noise = varianceNoise ?? RandnLike(modelOutput.shape, predNoised.dtype, modelOutput.device, generator);
            prev = (alphaProdTPrev / alphaProdS).sqrt() * predNoised + (1 - alphaProdTPrev / alphaProdS).sqrt() * noise;
        }
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary>DDPM's forward process at integer <paramref name="timestep"/>: <c>sqrt(a) x0 + sqrt(1 - a) noise</c>.</summary>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep) =>
        AddNoiseByAlphas(originalSamples, noise, timestep);

    private protected override void ReleaseState()
    {
        StepIndex = null;
        base.ReleaseState();
    }
}
