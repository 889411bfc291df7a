using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// DPM-Solver++ multistep in the EDM formulation (diffusers' <c>EDMDPMSolverMultistepScheduler</c>; Playground v2.5's
/// scheduler): the model output becomes the denoised sample by the EDM preconditioning, and the DPM-Solver++ updates run
/// on the sigmas with alpha_t = 1 (the input is already scaled by <c>c_in</c>). Algorithm types <c>dpmsolver++</c> and
/// <c>sde-dpmsolver++</c> (noise drawn at every step, in diffusers' order), orders 1 to 3, midpoint and heun, dynamic
/// thresholding, <c>lower_order_final</c> / <c>euler_at_final</c> / <c>final_sigmas_type</c>. The Karras ramp is float32,
/// as diffusers computes it here.
/// </summary>
public sealed class EDMDPMSolverMultistepScheduler : EDMSchedulerBase
{
    private readonly Tensor?[] _modelOutputs;
    private int _lowerOrderNums;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">An option diffusers' class has no working code for (sde-dpmsolver++ at order 3).</exception>
    public EDMDPMSolverMultistepScheduler(EDMDPMSolverMultistepSchedulerConfig? config = null)
        : this(config ?? new EDMDPMSolverMultistepSchedulerConfig(), 0) { }

    private EDMDPMSolverMultistepScheduler(EDMDPMSolverMultistepSchedulerConfig config, int _) : base(config, nameof(EDMDPMSolverMultistepScheduler))
    {
        Config = config;
        string name = nameof(EDMDPMSolverMultistepScheduler);
        (Algorithm, SolverType) = MultistepSolverBase.DpmSolverPlusPlusVariant(config.AlgorithmType, config.SolverType, name, hasDeprecatedForms: false);
        if (config.SolverOrder is < 1 or > 3)
            throw new ArgumentException($"{name}: solver_order must be 1, 2 or 3, got {config.SolverOrder}.", nameof(config));
        if (Algorithm == "sde-dpmsolver++" && config.SolverOrder == 3)
            throw new NotSupportedException($"{name}: sde-dpmsolver++ with solver_order 3 has no third-order update in diffusers (its step fails there); use solver_order 2.");
        if (config.Thresholding && !(config.DynamicThresholdingRatio is > 0 and <= 1))
            throw new ArgumentException($"{name}: dynamic_thresholding_ratio must be in (0, 1], got {config.DynamicThresholdingRatio}.", nameof(config));
        _modelOutputs = new Tensor?[config.SolverOrder];
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static EDMDPMSolverMultistepScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<EDMDPMSolverMultistepSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public EDMDPMSolverMultistepSchedulerConfig Config { get; }

    /// <summary>The algorithm in use (<c>deis</c> maps to <c>dpmsolver++</c>, as diffusers does).</summary>
    public string Algorithm { get; }

    /// <summary>The second-order update in use (<c>logrho</c> / <c>bh1</c> / <c>bh2</c> map to <c>midpoint</c>).</summary>
    public string SolverType { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(EDMDPMSolverMultistepScheduler);

    /// <summary>A timestep not in the schedule is taken as the last step, as diffusers' DPM-Solver does.</summary>
    private protected override int? IndexWhenMissing => TimestepArray.Length - 1;

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c>: a float32 ramp <c>linspace(0, 1, n)</c> through the
    /// schedule; timesteps <c>0.25 * log(sigma)</c>; the final sigma (0, or sigma_min); a fresh solver history.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="numInferenceSteps"/> is below 1.</exception>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null) => InstallSchedule(numInferenceSteps, device);

    private protected override float[] ComputeSigmas(int n)
    {
        using var scope = NewDisposeScope();
        var sigmas = Config.SigmaSchedule == "karras"
            ? KarrasSigmas(linspace(0.0, 1.0, n, ScalarType.Float32))
            : ExponentialSigmas(n);
        return sigmas.to(ScalarType.Float32).data<float>().ToArray();
    }

    private protected override float FinalSigma(float[] sigmas) => Config.FinalSigmasType == "sigma_min" ? (float)Config.SigmaMin!.Value : 0f;

    /// <summary>
    /// One multistep step: the denoised sample from the EDM preconditioning (thresholded if configured), the history
    /// shifted, and the first / second / third-order DPM-Solver++ update chosen as diffusers does (warm-up,
    /// <c>lower_order_final</c>, <c>euler_at_final</c>, a zero final sigma). The SDE variant draws noise of the denoised
    /// sample's dtype from <paramref name="generator"/> at every step.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        int count = TimestepArray.Length;
        bool lowerOrderFinal = i == count - 1
            && (Config.EulerAtFinal || (Config.LowerOrderFinal && count < 15) || Config.FinalSigmasType == "zero");
        bool lowerOrderSecond = i == count - 2 && Config.LowerOrderFinal && count < 15;

        using var scope = NewDisposeScope();
        var x0 = PreconditionOutputs(sample, modelOutput, SigmaArray[i]);
        if (Config.Thresholding) x0 = ThresholdSample(x0);
        _modelOutputs[0]?.Dispose();
        for (int k = 0; k < _modelOutputs.Length - 1; k++) _modelOutputs[k] = _modelOutputs[k + 1];
        _modelOutputs[^1] = x0.alias().DetachFromDisposeScope();

        Tensor? noise = Algorithm == "sde-dpmsolver++" ? RandnLike(x0.shape, x0.dtype, x0.device, generator) : null;
        Tensor prev;
        if (Config.SolverOrder == 1 || _lowerOrderNums < 1 || lowerOrderFinal)
            prev = FirstOrder(x0, sample, noise, i);
        else if (Config.SolverOrder == 2 || _lowerOrderNums < 2 || lowerOrderSecond)
            prev = SecondOrder(sample, noise, i);
        else
            prev = ThirdOrder(sample, i);
        if (_lowerOrderNums < Config.SolverOrder) _lowerOrderNums++;
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary><c>_sigma_to_alpha_sigma_t</c> (alpha 1: the input is pre-scaled) and the log-SNR <c>log(1) - log(sigma)</c>.</summary>
    private static (Tensor Alpha, Tensor Sigma, Tensor Lambda) AlphaSigmaLambda(float sigma)
    {
        var alpha = Scalar(1f);
        var s = Scalar(sigma);
        return (alpha, s, alpha.log() - s.log());
    }

    private Tensor FirstOrder(Tensor m, Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT, lambdaT) = AlphaSigmaLambda(SigmaArray[i + 1]);
        var (_, sigmaS, lambdaS) = AlphaSigmaLambda(SigmaArray[i]);
        return MultistepSolverBase.DpmSolverPlusPlusFirstOrder(sample, noise, alphaT, sigmaT, sigmaS, lambdaT - lambdaS, m);
    }

    private Tensor SecondOrder(Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT, lambdaT) = AlphaSigmaLambda(SigmaArray[i + 1]);
        var (_, sigmaS0, lambdaS0) = AlphaSigmaLambda(SigmaArray[i]);
        var (_, _, lambdaS1) = AlphaSigmaLambda(SigmaArray[i - 1]);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var h = lambdaT - lambdaS0;
        var h0 = lambdaS0 - lambdaS1;
        var r0 = h0 / h;
        var d1 = (1.0 / r0) * (m0 - m1);
        return MultistepSolverBase.DpmSolverPlusPlusSecondOrder(sample, noise, SolverType, alphaT, sigmaT, sigmaS0, h, m0, d1);
    }

    private Tensor ThirdOrder(Tensor sample, int i)
    {
        var (alphaT, sigmaT, lambdaT) = AlphaSigmaLambda(SigmaArray[i + 1]);
        var (_, sigmaS0, lambdaS0) = AlphaSigmaLambda(SigmaArray[i]);
        var (_, _, lambdaS1) = AlphaSigmaLambda(SigmaArray[i - 1]);
        var (_, _, lambdaS2) = AlphaSigmaLambda(SigmaArray[i - 2]);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var m2 = _modelOutputs[^3]!;
        var h = lambdaT - lambdaS0;
        var h0 = lambdaS0 - lambdaS1;
        var h1 = lambdaS1 - lambdaS2;
        var r0 = h0 / h;
        var r1 = h1 / h;
        var d10 = (1.0 / r0) * (m0 - m1);
        var d11 = (1.0 / r1) * (m1 - m2);
        var d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
        var d2 = (1.0 / (r0 + r1)) * (d10 - d11);
        return MultistepSolverBase.DpmSolverPlusPlusThirdOrder(sample, alphaT, sigmaT, sigmaS0, h, m0, d1, d2);
    }

    /// <summary>
    /// diffusers' <c>_threshold_sample</c> (Imagen's dynamic thresholding): per image, s = the
    /// <c>dynamic_thresholding_ratio</c> quantile of |x0|, clamped to [1, sample_max_value]; x0 is clamped to [-s, s] and
    /// divided by s. Computed in float32 for other dtypes and cast back.
    /// </summary>
    private Tensor ThresholdSample(Tensor sample)
    {
        var dtype = sample.dtype;
        var shape = sample.shape;
        if (dtype is not (ScalarType.Float32 or ScalarType.Float64)) sample = sample.to(ScalarType.Float32);
        long rest = 1;
        for (int k = 2; k < shape.Length; k++) rest *= shape[k];
        sample = sample.reshape(shape[0], shape[1] * rest);
        var absSample = sample.abs();
        using var q = tensor(Config.DynamicThresholdingRatio, sample.dtype, sample.device);
        var s = absSample.quantile(q, 1);
        s = s.clamp(1, Config.SampleMaxValue).unsqueeze(1);
        sample = sample.clamp(-s, s) / s;
        return sample.reshape(shape).to(dtype);
    }

    private protected override void ReleaseState()
    {
        for (int k = 0; k < _modelOutputs.Length; k++)
        {
            _modelOutputs[k]?.Dispose();
            _modelOutputs[k] = null;
        }
        _lowerOrderNums = 0;
        base.ReleaseState();
    }
}
