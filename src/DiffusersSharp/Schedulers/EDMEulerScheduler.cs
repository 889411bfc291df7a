using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// The Euler sampler in the EDM formulation (diffusers' <c>EDMEulerScheduler</c>; CosXL's, with v_prediction, sigma_data 1
/// and the exponential schedule): the model output is turned into the denoised sample by the EDM preconditioning and the
/// sample moves along <c>(x - denoised) / sigma</c> to the next sigma. Karras sigmas are computed in float64 and rounded to
/// float32, as diffusers does on the CPU; with <c>s_churn</c> (see the longer <see cref="Step(Tensor, float, Tensor, double, double, double, double, Runtime.Generator?)"/>)
/// noise is added first.
/// </summary>
public sealed class EDMEulerScheduler : EDMSchedulerBase
{
    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    public EDMEulerScheduler(EDMEulerSchedulerConfig? config = null) : this(config ?? new EDMEulerSchedulerConfig(), 0) { }

    private EDMEulerScheduler(EDMEulerSchedulerConfig config, int _) : base(config, nameof(EDMEulerScheduler)) => Config = config;

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static EDMEulerScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<EDMEulerSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public EDMEulerSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(EDMEulerScheduler);

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c>: a float64 ramp <c>linspace(0, 1, n)</c> through the
    /// schedule, rounded to float32; timesteps <c>0.25 * log(sigma)</c>; then the final sigma (0, or the last sigma).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="numInferenceSteps"/> is below 1.</exception>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null) => InstallSchedule(numInferenceSteps, device);

    private protected override float[] ComputeSigmas(int n)
    {
        using var scope = NewDisposeScope();
        var sigmas = Config.SigmaSchedule == "karras"
            ? KarrasSigmas(linspace(0.0, 1.0, n, ScalarType.Float64))
            : ExponentialSigmas(n);
        return sigmas.to(ScalarType.Float32).data<float>().ToArray();
    }

    private protected override float FinalSigma(float[] sigmas) => Config.FinalSigmasType == "sigma_min" ? sigmas[^1] : 0f;

    /// <inheritdoc/>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null) =>
        Step(modelOutput, timestep, sample, 0.0, 0.0, double.PositiveInfinity, 1.0, generator);

    /// <summary>
    /// One EDM Euler step with diffusers' churn options (<c>s_churn</c> &gt; 0 raises sigma by
    /// <c>gamma = min(s_churn / (len(sigmas) - 1), sqrt(2) - 1)</c> when <c>s_tmin &lt;= sigma &lt;= s_tmax</c>, adding noise
    /// drawn from <paramref name="generator"/> times <c>s_noise</c>). The sample is upcast to float32; the result is in the
    /// model output's dtype, and <see cref="EDMSchedulerBase.StepIndex"/> advances.
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
        float sigma = SigmaArray[i];
        double gamma = sTmin <= sigma && sigma <= sTmax ? Math.Min(sChurn / (SigmaArray.Length - 1), Math.Pow(2, 0.5) - 1) : 0.0;
        float sigmaHat = sigma * (float)(gamma + 1);
        if (gamma > 0)
        {
            var noise = RandnLike(modelOutput.shape, modelOutput.dtype, modelOutput.device, generator);
            var eps = noise * sNoise;
            x = x + eps * Scalar(MathF.Sqrt(sigmaHat * sigmaHat - sigma * sigma));
        }
        var predOriginal = PreconditionOutputs(x, modelOutput, sigmaHat);
        var derivative = (x - predOriginal) / Scalar(sigmaHat);
        var dt = Scalar(SigmaArray[i + 1] - sigmaHat);
        var prev = (x + derivative * dt).to(modelOutput.dtype);
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }
}
