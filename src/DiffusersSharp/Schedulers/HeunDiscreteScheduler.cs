using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Heun's second-order method in sigma space (diffusers' <c>HeunDiscreteScheduler</c>, Karras et al. 2022 algorithm 2):
/// every timestep but the first appears twice, the first visit an Euler step that keeps its derivative, the second the
/// correction that averages both derivatives from the kept sample. <see cref="Order"/> is 2, so the pipelines treat
/// the repeated timesteps as diffusers does.
/// </summary>
public sealed class HeunDiscreteScheduler : SigmaSchedulerBase
{
    private Tensor? _prevDerivative, _dt, _sample;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    public HeunDiscreteScheduler(HeunDiscreteSchedulerConfig? config = null)
        : this(config ?? new HeunDiscreteSchedulerConfig(), 0) { }

    private HeunDiscreteScheduler(HeunDiscreteSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, rescaleZeroSnr: false, zeroSnrLast: false, nameof(HeunDiscreteScheduler)))
    {
        Config = config;
        if ((config.UseKarrasSigmas ? 1 : 0) + (config.UseExponentialSigmas ? 1 : 0) + (config.UseBetaSigmas ? 1 : 0) > 1)
            throw new ArgumentException("Only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used.", nameof(config));
        if (config.PredictionType is not ("epsilon" or "v_prediction" or "sample"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, v_prediction, sample.", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static HeunDiscreteScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<HeunDiscreteSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public HeunDiscreteSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(HeunDiscreteScheduler);

    /// <summary>2: two model evaluations per timestep.</summary>
    public override int Order => 2;

    private protected override ScalarType TimestepDtype => ScalarType.Float32;

    private protected override string TimestepSpacing => Config.TimestepSpacing;

    /// <summary>True when the next <see cref="Step"/> is the first (Euler) half of a Heun step.</summary>
    public bool StateInFirstOrder => _dt is null;

    /// <summary>diffusers' <c>set_timesteps</c>: spaced float32 timesteps, interpolated (or converted) sigmas and 0, then
    /// every entry but the first (and the final sigma) repeated.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        int n = numInferenceSteps;
        float[] ts = TimestepSpacings.Float32(Config.TimestepSpacing, Config.NumTrainTimesteps, n, Config.StepsOffset);
        float[] train = TrainingSigmas(AlphasCumprod.ToArray());
        double[] sigmas = Array.ConvertAll(ts, x => NumpyMath.Interp(x, train));
        if (Config.UseKarrasSigmas || Config.UseExponentialSigmas || Config.UseBetaSigmas)
        {
            float[] logSigmas = NumpyMath.LogF32(train);
            double min = Config.SigmaMin ?? sigmas[^1], max = Config.SigmaMax ?? sigmas[0];
            sigmas = Config.UseKarrasSigmas ? NumpyMath.Karras(min, max, n)
                : Config.UseExponentialSigmas ? NumpyMath.Exponential(min, max, n) : NumpyMath.Beta(min, max, n);
            ts = Array.ConvertAll(sigmas, s => (float)NumpyMath.SigmaToT(s, logSigmas));
        }
        var timesteps = new List<float> { ts[0] };
        var sigmas32 = new List<float> { (float)sigmas[0] };
        for (int i = 1; i < n; i++)
        {
            timesteps.Add(ts[i]);
            timesteps.Add(ts[i]);
            sigmas32.Add((float)sigmas[i]);
            sigmas32.Add((float)sigmas[i]);
        }
        sigmas32.Add(0f);
        InstallSigmas(timesteps.ToArray(), sigmas32.ToArray(), device);
        NumInferenceSteps = n;
    }

    /// <summary>
    /// One half of a Heun step. The first half stores the derivative, dt and sample and returns the Euler estimate; the
    /// second converts the model output at the next sigma, averages the derivatives and steps from the stored sample.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        bool first = StateInFirstOrder;
        var sigma = Scalar(first ? SigmaArray[i] : SigmaArray[i - 1]);
        var sigmaNext = Scalar(first ? SigmaArray[i + 1] : SigmaArray[i]);
        var sigmaHat = sigma * (0 + 1);
        var sigmaInput = first ? sigmaHat : sigmaNext;
        Tensor predOriginal = Config.PredictionType switch
        {
            "epsilon" => sample - sigmaInput * modelOutput,
            "v_prediction" => modelOutput * (-sigmaInput / (sigmaInput.pow(2) + 1).pow(0.5)) + sample / (sigmaInput.pow(2) + 1),
            _ => modelOutput,
        };
        if (Config.ClipSample) predOriginal = predOriginal.clamp(-Config.ClipSampleRange, Config.ClipSampleRange);

        Tensor derivative, dt, from;
        if (first)
        {
            derivative = (sample - predOriginal) / sigmaHat;
            dt = sigmaNext - sigmaHat;
            from = sample;
            ReleaseState();
            _prevDerivative = derivative.alias().DetachFromDisposeScope();
            _dt = dt.alias().DetachFromDisposeScope();
            _sample = sample.alias().DetachFromDisposeScope();
        }
        else
        {
            derivative = (sample - predOriginal) / sigmaNext;
            derivative = (_prevDerivative! + derivative) / 2;
            dt = _dt!.alias();
            from = _sample!.alias();
            ReleaseState();
        }
        var prev = from + derivative * dt;
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    private protected override void ReleaseState()
    {
        _prevDerivative?.Dispose();
        _dt?.Dispose();
        _sample?.Dispose();
        (_prevDerivative, _dt, _sample) = (null, null, null);
        base.ReleaseState();
    }
}
