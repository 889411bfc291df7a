using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Latent consistency models' multistep sampling (Luo et al. 2023; diffusers' <c>LCMScheduler</c>): each step maps the
/// sample straight to a denoised estimate with the consistency boundary condition (<c>c_skip * x + c_out * x0</c>), then
/// re-noises it to the next timestep with fresh noise from the generator (none after the last step). The timesteps are
/// picked evenly from the distillation schedule of <c>original_inference_steps</c>. Meant for LCM-distilled models (or
/// LCM-LoRAs) at 2 to 8 steps with guidance 1 or low guidance.
/// </summary>
public sealed class LCMScheduler : DiffusionSchedulerBase
{
    private readonly float _finalAlphaCumprod;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps(int, Device?)"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">Thresholding (not implemented here).</exception>
    public LCMScheduler(LCMSchedulerConfig? config = null) : this(config ?? new LCMSchedulerConfig(), 0) { }

    private LCMScheduler(LCMSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: false, nameof(LCMScheduler)))
    {
        Config = config;
        if (config.Thresholding)
            throw new NotSupportedException("LCMScheduler: thresholding is not implemented in DiffusersSharp; set thresholding to false.");
        if (config.PredictionType is not ("epsilon" or "sample" or "v_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, sample, v_prediction for LCMScheduler.", nameof(config));
        if (config.OriginalInferenceSteps < 1 || config.OriginalInferenceSteps > config.NumTrainTimesteps)
            throw new ArgumentException($"original_inference_steps {config.OriginalInferenceSteps} must be between 1 and num_train_timesteps ({config.NumTrainTimesteps}).", nameof(config));
        _finalAlphaCumprod = config.SetAlphaToOne ? 1f : AlphasCumprod[0];
        int t = config.NumTrainTimesteps;
        TimestepArray = Enumerable.Range(0, t).Select(i => (float)(t - 1 - i)).ToArray();
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static LCMScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<LCMSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public LCMSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(LCMScheduler);

    /// <summary>1.0.</summary>
    public override double InitNoiseSigma => 1.0;

    /// <summary>Index of the next step, or null before the first <see cref="Step"/>.</summary>
    public int? StepIndex { get; private set; }

    private protected override ScalarType TimestepDtype => ScalarType.Int64;

    /// <summary>
    /// diffusers' <c>set_timesteps(num_inference_steps)</c>: the distillation schedule <c>k, 2k, ..., original_steps * k</c>
    /// less one (k = num_train_timesteps // original_inference_steps), reversed, at the indices
    /// <c>floor(linspace(0, original_steps, N, endpoint=False))</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">More steps than original_inference_steps (or than the training steps).</exception>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null) => SetTimesteps(numInferenceSteps, device, null);

    /// <summary>
    /// diffusers' <c>set_timesteps(num_inference_steps, original_inference_steps=..., strength=...)</c>: as
    /// <see cref="SetTimesteps(int, Device?)"/> with <paramref name="originalInferenceSteps"/> in place of the config's
    /// (null keeps it), over the first <c>int(original_steps * strength)</c> entries of the distillation schedule (the
    /// image-to-image start of <c>LatentConsistencyModelImg2ImgPipeline</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">More steps than the schedule holds, original steps outside [1,
    /// num_train_timesteps], or a strength outside (0, 1].</exception>
    public void SetTimesteps(int numInferenceSteps, Device? device, int? originalInferenceSteps, double strength = 1.0)
    {
        CheckStepCount(numInferenceSteps);
        int original = originalInferenceSteps ?? Config.OriginalInferenceSteps;
        if (original < 1 || original > Config.NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(originalInferenceSteps), original,
                $"original_inference_steps must be between 1 and num_train_timesteps ({Config.NumTrainTimesteps}).");
        if (!(strength > 0 && strength <= 1))
            throw new ArgumentOutOfRangeException(nameof(strength), strength, "strength must be in (0, 1].");
        int length = (int)(original * strength);
        if (length / numInferenceSteps < 1)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps, strength == 1.0
                ? $"LCMScheduler picks its timesteps from original_inference_steps ({original}); use at most that many steps."
                : $"LCMScheduler picks its timesteps from int(original_inference_steps x strength) = int({original} x {strength}) = {length}; use at most that many steps, or raise strength.");
        var timesteps = DistillationTimesteps(Config.NumTrainTimesteps, original, numInferenceSteps, strength);
        InstallSchedule(timesteps, device);
        StepIndex = null;
        NumInferenceSteps = numInferenceSteps;
    }

    /// <summary>
    /// The LCM / TCD inference timesteps: the distillation schedule <c>k, 2k, ..., L * k</c> less one (k = numTrain //
    /// original, L = int(original * strength)), reversed, at the indices <c>floor(linspace(0, L, n, endpoint=False))</c>.
    /// </summary>
    internal static float[] DistillationTimesteps(int numTrain, int original, int n, double strength = 1.0)
    {
        long k = numTrain / original;
        int length = (int)(original * strength);
        // np.linspace(0, L, N, endpoint=False) is j * (L / N) in float64, floored to an index of the reversed schedule,
        // whose entry j is (L - j) * k - 1.
        double spacing = (double)length / n;
        var timesteps = new float[n];
        for (int j = 0; j < n; j++)
        {
            long index = (long)Math.Floor(j * spacing);
            timesteps[j] = (length - index) * k - 1;
        }
        return timesteps;
    }

    /// <summary>
    /// <c>get_scalings_for_boundary_condition_discrete</c> on the int64 timestep as diffusers gets it from
    /// <c>scheduler.timesteps</c>: <c>t * timestep_scaling</c> promotes to float32, and c_skip = 0.25 / (s² + 0.25),
    /// c_out = s / sqrt(s² + 0.25) are float32 tensor ops (sigma_data 0.5).
    /// </summary>
    private (Tensor CSkip, Tensor COut) BoundaryScalings(long timestep)
    {
        var scaled = tensor(timestep, ScalarType.Int64) * Config.TimestepScaling;
        var cSkip = Scalar(0.25f) / (scaled.pow(2) + 0.25);
        var cOut = scaled / (scaled.pow(2) + 0.25).pow(0.5);
        return (cSkip, cOut);
    }

    /// <summary>
    /// One LCM step: x0 from the model output, clipped when configured; <c>denoised = c_out * x0 + c_skip * sample</c>;
    /// then, except on the last step, <c>sqrt(a_prev) * denoised + sqrt(1 - a_prev) * noise</c> with the noise drawn from
    /// <paramref name="generator"/> (model output's shape, the denoised dtype), as diffusers does between steps.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps(int, Device?)"/> was not called, or all steps are done.</exception>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        var (prev, denoised) = StepWithDenoised(modelOutput, timestep, sample, generator);
        denoised.Dispose();
        return prev;
    }

    /// <summary>
    /// <see cref="Step"/> returning diffusers' pair <c>(prev_sample, denoised)</c>: the sample for the next step and the
    /// denoised estimate of this one (the output of <c>LatentConsistencyModelPipeline</c>). On the last step they hold the
    /// same values (two tensors, each the caller's to dispose).
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps(int, Device?)"/> was not called, or all steps are done.</exception>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public (Tensor PrevSample, Tensor Denoised) StepWithDenoised(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        RequireTimesteps();
        int t = WholeTimestep(timestep);
        if (t < 0 || t >= AlphasCumprod.Count)
            throw new ArgumentException($"Timestep {t} is outside [0, {AlphasCumprod.Count}).", nameof(timestep));
        StepIndex ??= BeginIndex ?? TimestepIndex.Find(TimestepArray, timestep, nameof(LCMScheduler));
        int i = StepIndex.Value;
        if (i >= TimestepArray.Length)
            throw new InvalidOperationException($"LCMScheduler: all {NumInferenceSteps} steps are done; call SetTimesteps again.");
        int prevT = i + 1 < TimestepArray.Length ? (int)TimestepArray[i + 1] : t;

        using var scope = NewDisposeScope();
        var alphaProdT = Scalar(AlphasCumprod[t]);
        var alphaProdTPrev = Scalar(prevT >= 0 ? AlphasCumprod[prevT] : _finalAlphaCumprod);
        var betaProdT = 1 - alphaProdT;
        var betaProdTPrev = 1 - alphaProdTPrev;
        var (cSkip, cOut) = BoundaryScalings(t);

        var predOriginal = Config.PredictionType switch
        {
            "epsilon" => (sample - betaProdT.sqrt() * modelOutput) / alphaProdT.sqrt(),
            "sample" => modelOutput.alias(),
            _ => alphaProdT.sqrt() * sample - betaProdT.sqrt() * modelOutput,
        };
        if (Config.ClipSample) predOriginal = predOriginal.clamp(-Config.ClipSampleRange, Config.ClipSampleRange);

        var denoised = cOut * predOriginal + cSkip * sample;
        Tensor prev = denoised.alias();
        if (i != NumInferenceSteps!.Value - 1)
        {
            var noise = RandnLike(modelOutput.shape, denoised.dtype, modelOutput.device, generator);
            prev = alphaProdTPrev.sqrt() * denoised + betaProdTPrev.sqrt() * noise;
        }
        StepIndex = i + 1;
        return (prev.MoveToOuterDisposeScope(), denoised.MoveToOuterDisposeScope());
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
