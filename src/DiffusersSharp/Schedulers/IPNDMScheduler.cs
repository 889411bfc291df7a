using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Improved pseudo numerical methods for diffusion models (Zhang and Chen 2022; diffusers' <c>IPNDMScheduler</c>):
/// a fourth-order linear multistep method (Adams–Bashforth, lower orders while the history fills) on the continuous
/// schedule <c>beta = sin(s * pi / 2)²</c>, <c>alpha = sqrt(1 - beta²)</c> for s from 1 to 0. Its timesteps are
/// fractions in (0, 1] (<c>atan2(beta, alpha) * 2 / pi</c>), not training timesteps: diffusers runs it unchanged on a
/// UNet trained on 0..999, and so does this port. It has no forward process: img2img and inpaint refuse it, as
/// diffusers' pipelines fail on its missing <c>add_noise</c>.
/// </summary>
public sealed class IPNDMScheduler : IDiffusionScheduler
{
    private readonly List<Tensor> _ets = new();
    private float[] _betas = Array.Empty<float>();
    private float[] _alphas = Array.Empty<float>();
    private float[] _timesteps = Array.Empty<float>();

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    public IPNDMScheduler(IPNDMSchedulerConfig? config = null)
    {
        Config = config ?? new IPNDMSchedulerConfig();
        if (Config.NumTrainTimesteps < 1)
            throw new ArgumentException($"num_train_timesteps must be at least 1, got {Config.NumTrainTimesteps}.", nameof(config));
        if (Config.TrainedBetas is { Length: < 2 })
            throw new ArgumentException("trained_betas needs at least two values (the timesteps are one fewer).", nameof(config));
        // diffusers' constructor runs set_timesteps(num_train_timesteps); the step count is reset to none here.
        Install(Config.NumTrainTimesteps);
        NumInferenceSteps = null;
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static IPNDMScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<IPNDMSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public IPNDMSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public string ClassName => nameof(IPNDMScheduler);

    /// <summary>1.</summary>
    public int Order => 1;

    /// <inheritdoc/>
    public int NumTrainTimesteps => Config.NumTrainTimesteps;

    /// <summary><c>epsilon</c>: IPNDM's step treats the model output as the noise.</summary>
    public string PredictionType => "epsilon";

    /// <summary>1.0.</summary>
    public double InitNoiseSigma => 1.0;

    /// <summary>The float32 timesteps in (0, 1] of the last <see cref="SetTimesteps"/>.</summary>
    public IReadOnlyList<float> TimestepValues => _timesteps;

    /// <inheritdoc/>
    public int? NumInferenceSteps { get; private set; }

    /// <inheritdoc/>
    public int? BeginIndex { get; private set; }

    /// <summary>Index of the next step, or null before the first step.</summary>
    public int? StepIndex { get; private set; }

    /// <summary>
    /// diffusers' <c>set_timesteps</c>: s = <c>linspace(1, 0, N + 1)</c> (float32, torch's linspace), betas
    /// <c>sin(s * pi / 2)²</c> (or the trained betas), alphas <c>sqrt(1 - beta²)</c>, timesteps
    /// <c>atan2(beta, alpha) / pi * 2</c> without the last; clears the multistep history.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="numInferenceSteps"/> is below 1.</exception>
    public void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numInferenceSteps, 1);
        Install(numInferenceSteps);
        NumInferenceSteps = numInferenceSteps;
    }

    private void Install(int n)
    {
        using var scope = NewDisposeScope();
        var steps = linspace(1, 0, n + 1, dtype: ScalarType.Float32)[..^1];
        steps = cat(new[] { steps, tensor(new[] { 0f }) });
        // torch.sin(steps * math.pi / 2) ** 2 and torch.atan2(betas, alphas): the products and quotients are float32
        // tensor ops; sin, atan2 and the square root are correctly rounded (float64, rounded once), as the reference
        // script computes them: libtorch's SIMD float32 sin / atan2 / sqrt can be an ulp off in some lanes, and
        // differently from torch 1.13 (e.g. 0.75605452 for sqrt(0.5716185), not 0.75605458).
        float[] half = (steps * Math.PI / 2).data<float>().ToArray();
        float[] betaValues = Config.TrainedBetas is { } trained
            ? Array.ConvertAll(trained, v => (float)v)
            : Array.ConvertAll(half, x => { float sin = (float)Math.Sin(x); return sin * sin; });
        float[] alphaValues = Array.ConvertAll(betaValues, v => MathF.Sqrt(1f - v * v));
        var angles = new float[betaValues.Length - 1];
        for (int i = 0; i < angles.Length; i++) angles[i] = (float)Math.Atan2(betaValues[i], alphaValues[i]);
        var timesteps = tensor(angles) / Math.PI * 2;
        _betas = betaValues;
        _alphas = alphaValues;
        _timesteps = timesteps.data<float>().ToArray();
        ReleaseState();
        BeginIndex = null;
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="beginIndex"/> is negative.</exception>
    public void SetBeginIndex(int beginIndex)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(beginIndex);
        BeginIndex = beginIndex;
    }

    /// <summary>The sample unchanged (a new view).</summary>
    public Tensor ScaleModelInput(Tensor sample, float timestep)
    {
        ArgumentNullException.ThrowIfNull(sample);
        return sample.alias();
    }

    /// <summary>
    /// One IPNDM step: <c>ets = sample * beta + model_output * alpha</c> joins the history, which is combined with
    /// the Adams–Bashforth weights of its length (1, 2, 3, then 4 entries), and the sample moves to the next
    /// (alpha, beta): <c>next_alpha * (sample - beta * ets) / max(alpha, 1e-8) + next_beta * ets</c>.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        if (NumInferenceSteps is null)
            throw new InvalidOperationException("IPNDMScheduler: call SetTimesteps before Step.");
        StepIndex ??= BeginIndex ?? TimestepIndex.Find(_timesteps, timestep, nameof(IPNDMScheduler));
        int i = StepIndex.Value;
        if (i >= _timesteps.Length)
            throw new InvalidOperationException($"IPNDMScheduler: all {_timesteps.Length} steps are done; call SetTimesteps again.");

        using var scope = NewDisposeScope();
        var ets = sample * Scalar(_betas[i]) + modelOutput * Scalar(_alphas[i]);
        _ets.Add(ets.DetachFromDisposeScope());
        int k = _ets.Count;
        Tensor combined = k switch
        {
            1 => _ets[k - 1],
            2 => (3 * _ets[k - 1] - _ets[k - 2]) / 2,
            3 => (23 * _ets[k - 1] - 16 * _ets[k - 2] + 5 * _ets[k - 3]) / 12,
            _ => (1.0 / 24) * (55 * _ets[k - 1] - 59 * _ets[k - 2] + 37 * _ets[k - 3] - 9 * _ets[k - 4]),
        };
        // _get_prev_sample; Python's max(alpha, 1e-8) keeps the 0-dim tensor unless 1e-8 is larger.
        var sigma = Scalar(_betas[i]);
        var pred = _alphas[i] < (float)1e-8
            ? (sample - sigma * combined) / 1e-8
            : (sample - sigma * combined) / Scalar(_alphas[i]);
        var prev = Scalar(_alphas[i + 1]) * pred + combined * Scalar(_betas[i + 1]);
        // Only four entries are ever read: older ones are freed (diffusers keeps them all).
        if (_ets.Count > 4)
        {
            _ets[0].Dispose();
            _ets.RemoveAt(0);
        }
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary>Not available: diffusers' <c>IPNDMScheduler</c> has no <c>add_noise</c> (img2img / inpaint fail with it).</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep) =>
        throw new NotSupportedException("IPNDMScheduler has no forward process (diffusers' has no add_noise): use it for text-to-image only.");

    /// <summary>Frees the multistep history.</summary>
    public void Dispose()
    {
        ReleaseState();
        GC.SuppressFinalize(this);
    }

    private void ReleaseState()
    {
        foreach (var t in _ets) t.Dispose();
        _ets.Clear();
        StepIndex = null;
    }

    private static Tensor Scalar(float value) => tensor(value, ScalarType.Float32);
}
