using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// diffusers' <c>SCMScheduler</c> (SANA-Sprint's sCM consistency sampler in TrigFlow time): timesteps are angles from
/// <c>max_timesteps</c> (π/2) down to 0; each step predicts x0 = cos(s)·x - sin(s)·v and re-noises it to the next angle
/// t with fresh noise: cos(t)·x0 + sin(t)·σ_data·ε (ε drawn from the generator at every step, the last one included,
/// as diffusers draws it). The angles are 0-dim float32 tensors, as diffusers' schedule.
/// </summary>
public sealed class SCMScheduler
{
    private float[] _timesteps = [];
    private int _stepIndex;

    /// <summary>Creates the scheduler.</summary>
    /// <exception cref="ArgumentException">A prediction type other than trigflow, or a non-positive sigma_data.</exception>
    public SCMScheduler(SCMSchedulerConfig? config = null)
    {
        Config = config ?? new SCMSchedulerConfig();
        if (Config.PredictionType != "trigflow")
            throw new ArgumentException($"SCMScheduler: prediction_type \"{Config.PredictionType}\" is not supported; only trigflow.", nameof(config));
        if (!(Config.SigmaData > 0))
            throw new ArgumentException($"SCMScheduler: sigma_data must be positive, got {Config.SigmaData}.", nameof(config));
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static SCMScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<SCMSchedulerConfig>(SchedulerConfigText.Read(folderOrFile), nameof(SCMScheduler)));

    /// <summary>The config.</summary>
    public SCMSchedulerConfig Config { get; }

    /// <summary>The angles of the last <see cref="SetTimesteps"/>: one more than the steps (the final 0 included).</summary>
    public IReadOnlyList<float> TimestepValues => _timesteps;

    /// <summary>
    /// diffusers' <c>set_timesteps(n, max_timesteps=..., intermediate_timesteps=...)</c>: [max, intermediate, 0] for two
    /// steps with an intermediate angle, else float32 <c>linspace(max, 0, n + 1)</c>; the step index restarts at 0
    /// (the pipeline's <c>set_begin_index(0)</c>).
    /// </summary>
    /// <exception cref="ArgumentException">Steps out of range, or an intermediate angle with a step count other than 2.</exception>
    public void SetTimesteps(int numInferenceSteps, double maxTimesteps = 1.57080, double? intermediateTimesteps = 1.3)
    {
        if (numInferenceSteps < 1 || numInferenceSteps > Config.NumTrainTimesteps)
            throw new ArgumentException($"num_inference_steps must be 1 to {Config.NumTrainTimesteps}, got {numInferenceSteps}.");
        if (intermediateTimesteps is not null && numInferenceSteps != 2)
            throw new ArgumentException("Intermediate timesteps for SCM are only supported with 2 inference steps (diffusers raises the same); pass none.");
        if (intermediateTimesteps is double mid)
            _timesteps = [(float)maxTimesteps, (float)mid, 0f];
        else
        {
            using var angles = linspace(maxTimesteps, 0, numInferenceSteps + 1, dtype: ScalarType.Float32);
            _timesteps = angles.data<float>().ToArray();
        }
        _stepIndex = 0;
    }

    /// <summary>
    /// diffusers' <c>set_begin_index</c>: the next <see cref="Step"/> goes from angle <paramref name="beginIndex"/> to the
    /// one after it (image-to-image starts part-way, at the strength's first angle).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">No step starts at <paramref name="beginIndex"/> in the current schedule.</exception>
    public void SetBeginIndex(int beginIndex)
    {
        if (beginIndex < 0 || beginIndex + 1 >= _timesteps.Length)
            throw new ArgumentOutOfRangeException(nameof(beginIndex), beginIndex, $"The schedule has {Math.Max(_timesteps.Length - 1, 0)} steps; call SetTimesteps first.");
        _stepIndex = beginIndex;
    }

    /// <summary>
    /// One step from <paramref name="sample"/> with the model's TrigFlow velocity: the next sample and the predicted x0
    /// (diffusers' <c>denoised</c>, which the pipeline decodes after the last step).
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    public (Tensor PrevSample, Tensor Denoised) Step(Tensor modelOutput, Tensor sample, Runtime.Generator? generator)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        if (_stepIndex + 1 >= _timesteps.Length)
            throw new InvalidOperationException(_timesteps.Length == 0 ? "Call SetTimesteps before Step." : "All steps are done; call SetTimesteps again.");
        using var scope = NewDisposeScope();
        var s = tensor(_timesteps[_stepIndex], ScalarType.Float32);
        var t = tensor(_timesteps[_stepIndex + 1], ScalarType.Float32);
        var predX0 = s.cos() * sample - s.sin() * modelOutput;
        var noise = (generator is null
            ? randn(modelOutput.shape, dtype: ScalarType.Float32, device: modelOutput.device)
            : generator.Randn(modelOutput.shape, ScalarType.Float32, modelOutput.device)) * Config.SigmaData;
        var prev = t.cos() * predX0 + t.sin() * noise;
        _stepIndex++;
        return (prev.MoveToOuterDisposeScope(), predX0.MoveToOuterDisposeScope());
    }
}
