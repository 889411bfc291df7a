using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Euler's method on the probability-flow ODE in sigma space (diffusers' <c>EulerDiscreteScheduler</c>, Karras et al.
/// 2022 algorithm 2). Schedule and step follow diffusers 0.40 operation by operation.
/// </summary>
public sealed class EulerDiscreteScheduler : SigmaSchedulerBase
{
    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An unknown option, or several sigma conversions at once.</exception>
    public EulerDiscreteScheduler(EulerDiscreteSchedulerConfig? config = null)
        : this(config ?? new EulerDiscreteSchedulerConfig(), 0) { }

    private EulerDiscreteScheduler(EulerDiscreteSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: true, nameof(EulerDiscreteScheduler)))
    {
        Config = config;
        if ((config.UseKarrasSigmas ? 1 : 0) + (config.UseExponentialSigmas ? 1 : 0) + (config.UseBetaSigmas ? 1 : 0) > 1)
            throw new ArgumentException("Only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used.", nameof(config));
        if (config.PredictionType is not ("epsilon" or "v_prediction" or "sample" or "original_sample"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, v_prediction, sample.", nameof(config));
        if (config.TimestepType is not ("discrete" or "continuous"))
            throw new ArgumentException($"timestep_type \"{config.TimestepType}\" must be discrete or continuous.", nameof(config));
        if (config.InterpolationType is not ("linear" or "log_linear"))
            throw new ArgumentException($"interpolation_type \"{config.InterpolationType}\" is not implemented; use linear or log_linear.", nameof(config));
        if (config.FinalSigmasType is not ("zero" or "sigma_min"))
            throw new ArgumentException($"final_sigmas_type must be one of zero, sigma_min, got \"{config.FinalSigmasType}\".", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));

        int t = config.NumTrainTimesteps;
        var lin = NumpyMath.Linspace(0, t - 1, t);
        var timesteps = new float[t];
        for (int i = 0; i < t; i++) timesteps[i] = (float)lin[t - 1 - i];
        TimestepArray = ContinuousV ? LogQuarter(SigmaArray, t) : timesteps;
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static EulerDiscreteScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<EulerDiscreteSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public EulerDiscreteSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(EulerDiscreteScheduler);

    private protected override ScalarType TimestepDtype => ScalarType.Float32;

    private protected override string TimestepSpacing => Config.TimestepSpacing;

    private bool ContinuousV => Config.TimestepType == "continuous" && Config.PredictionType == "v_prediction";

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c>: spaced timesteps, sigmas interpolated (and
    /// converted to Karras / exponential / beta sigmas when configured), then the final sigma.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        int n = numInferenceSteps, T = Config.NumTrainTimesteps;
        float[] ts = TimestepSpacings.Float32(Config.TimestepSpacing, T, n, Config.StepsOffset);
        float[] train = TrainingSigmas(AlphasCumprod.ToArray());
        float[] logSigmas = NumpyMath.LogF32(train);

        double[] sigmas;
        if (Config.InterpolationType == "linear")
        {
            sigmas = Array.ConvertAll(ts, x => NumpyMath.Interp(x, train));
        }
        else
        {
            // torch.linspace(np.log(sigmas[-1]), np.log(sigmas[0]), n + 1).exp(): n + 1 values, as diffusers has it.
            using var scope = NewDisposeScope();
            var lin = linspace((float)Math.Log(train[^1]), (float)Math.Log(train[0]), n + 1, ScalarType.Float32).exp();
            sigmas = Array.ConvertAll(lin.data<float>().ToArray(), v => (double)v);
        }

        double[]? tsConverted = null;
        if (Config.UseKarrasSigmas || Config.UseExponentialSigmas || Config.UseBetaSigmas)
        {
            double min = Config.SigmaMin ?? sigmas[^1], max = Config.SigmaMax ?? sigmas[0];
            sigmas = Config.UseKarrasSigmas ? NumpyMath.Karras(min, max, n)
                : Config.UseExponentialSigmas ? NumpyMath.Exponential(min, max, n)
                : NumpyMath.Beta(min, max, n);
            tsConverted = Array.ConvertAll(sigmas, s => NumpyMath.SigmaToT(s, logSigmas));
        }

        float last = Config.FinalSigmasType == "sigma_min" ? MathF.Sqrt((1f - AlphasCumprod[0]) / AlphasCumprod[0]) : 0f;
        var sigmas32 = new float[sigmas.Length + 1];
        for (int i = 0; i < sigmas.Length; i++) sigmas32[i] = (float)sigmas[i];
        sigmas32[^1] = last;

        float[] timesteps = ContinuousV ? LogQuarter(sigmas32, sigmas32.Length - 1)
            : tsConverted is not null ? Array.ConvertAll(tsConverted, v => (float)v) : ts;
        InstallSigmas(timesteps, sigmas32, device);
        NumInferenceSteps = n;
    }

    /// <summary><c>[0.25 * sigma.log() for sigma in sigmas[:count]]</c> with float32 0-dim tensors.</summary>
    private static float[] LogQuarter(float[] sigmas, int count)
    {
        using var scope = NewDisposeScope();
        var result = new float[count];
        for (int i = 0; i < count; i++) result[i] = (Scalar(sigmas[i]).log() * 0.25).item<float>();
        return result;
    }

    /// <inheritdoc/>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null) =>
        Step(modelOutput, timestep, sample, 0.0, 0.0, double.PositiveInfinity, 1.0, generator);

    /// <summary>
    /// One Euler step with diffusers' churn options (<c>s_churn</c> &gt; 0 adds noise drawn from
    /// <paramref name="generator"/> when <c>s_tmin &lt;= sigma &lt;= s_tmax</c>). Returns the previous sample in the
    /// model output's dtype and advances <see cref="SigmaSchedulerBase.StepIndex"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public Tensor Step(Tensor modelOutput, float timestep, Tensor sample, double sChurn, double sTmin, double sTmax, double sNoise,
        Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        var x = sample.to(ScalarType.Float32);
        float sigmaValue = SigmaArray[i];
        var sigma = Scalar(sigmaValue);
        double gamma = sTmin <= sigmaValue && sigmaValue <= sTmax ? Math.Min(sChurn / (SigmaArray.Length - 1), Math.Pow(2, 0.5) - 1) : 0.0;
        var sigmaHat = sigma * (gamma + 1);
        if (gamma > 0)
        {
            var noise = RandnLike(modelOutput.shape, modelOutput.dtype, modelOutput.device, generator);
            var eps = noise * sNoise;
            x = x + eps * (sigmaHat.pow(2) - sigma.pow(2)).pow(0.5);
        }

        Tensor predOriginal = Config.PredictionType switch
        {
            "original_sample" or "sample" => modelOutput,
            "epsilon" => x - sigmaHat * modelOutput,
            _ => modelOutput * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + x / (sigma.pow(2) + 1),
        };
        var derivative = (x - predOriginal) / sigmaHat;
        var dt = Scalar(SigmaArray[i + 1]) - sigmaHat;
        var prev = (x + derivative * dt).to(modelOutput.dtype);
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }
}
