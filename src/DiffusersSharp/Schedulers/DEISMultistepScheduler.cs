using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Diffusion exponential integrator sampler (Zhang and Chen 2022; diffusers' <c>DEISMultistepScheduler</c>): a multistep
/// solver on the noise prediction whose higher-order coefficients integrate a Lagrange polynomial in log(rho), rho =
/// sigma_t / alpha_t (the "logrho" solver), orders 1 to 3. The multistep solvers' schedule with a final sigma of the
/// smallest training sigma, and diffusers' order of operations on 0-dim float32 tensors.
/// </summary>
public sealed class DEISMultistepScheduler : MultistepSolverBase
{
    private readonly Tensor?[] _modelOutputs;
    private int _lowerOrderNums;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">An option diffusers has that this port does not implement.</exception>
    public DEISMultistepScheduler(DEISMultistepSchedulerConfig? config = null)
        : this(config ?? new DEISMultistepSchedulerConfig(), 0) { }

    private DEISMultistepScheduler(DEISMultistepSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, rescaleZeroSnr: false, zeroSnrLast: false, nameof(DEISMultistepScheduler)))
    {
        Config = config;
        CheckSolverConfig(config, nameof(DEISMultistepScheduler));
        if (config.AlgorithmType is not ("deis" or "dpmsolver" or "dpmsolver++"))
            throw new ArgumentException($"algorithm_type \"{config.AlgorithmType}\" is not implemented for DEISMultistepScheduler; use deis.", nameof(config));
        if (config.SolverType is not ("logrho" or "midpoint" or "heun" or "bh1" or "bh2"))
            throw new ArgumentException($"solver_type \"{config.SolverType}\" is not implemented for DEISMultistepScheduler; use logrho.", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
        _modelOutputs = new Tensor?[config.SolverOrder];
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static DEISMultistepScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<DEISMultistepSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public DEISMultistepSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(DEISMultistepScheduler);

    private protected override string TimestepSpacing => Config.TimestepSpacing;

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c>: the multistep solvers' schedule (Karras timesteps
    /// rounded), ending on the smallest training sigma (DEIS has no final_sigmas_type), or on the last converted sigma.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        var (timesteps, sigmas) = MultistepSchedule.Compute(numInferenceSteps, Config.NumTrainTimesteps, AlphasCumprod.ToArray(), new()
        {
            Spacing = Config.TimestepSpacing, StepsOffset = Config.StepsOffset, LastTimestep = Config.NumTrainTimesteps,
            Karras = Config.UseKarrasSigmas, Exponential = Config.UseExponentialSigmas, Beta = Config.UseBetaSigmas,
            SigmaMin = Config.SigmaMin, SigmaMax = Config.SigmaMax, FinalSigmasType = "sigma_min", FinalFromConverted = true,
        });
        InstallSigmas(timesteps, sigmas, device);
        NumInferenceSteps = timesteps.Length;
    }

    /// <summary>
    /// One DEIS step: the model output as a noise prediction (through x0, as diffusers converts it), pushed on the
    /// history; then the first-order (DDIM) update while the history is short or on the last step, the second-order on
    /// the step before it (both only for schedules under 15 steps with lower_order_final), else the configured order.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        int n = TimestepArray.Length;
        bool lowerFinal = i == n - 1 && Config.LowerOrderFinal && n < 15;
        bool lowerSecond = i == n - 2 && Config.LowerOrderFinal && n < 15;
        using var scope = NewDisposeScope();
        var eps = ConvertModelOutput(modelOutput, sample, i);
        _modelOutputs[0]?.Dispose();
        for (int k = 0; k < _modelOutputs.Length - 1; k++) _modelOutputs[k] = _modelOutputs[k + 1];
        _modelOutputs[^1] = eps.alias().DetachFromDisposeScope();

        Tensor prev;
        if (Config.SolverOrder == 1 || _lowerOrderNums < 1 || lowerFinal) prev = FirstOrder(eps, sample, i);
        else if (Config.SolverOrder == 2 || _lowerOrderNums < 2 || lowerSecond) prev = SecondOrder(sample, i);
        else prev = ThirdOrder(sample, i);
        if (_lowerOrderNums < Config.SolverOrder) _lowerOrderNums++;
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary><c>convert_model_output</c>: x0 by the prediction type, then the noise <c>(x - alpha_t x0) / sigma_t</c>.</summary>
    private Tensor ConvertModelOutput(Tensor modelOutput, Tensor sample, int i)
    {
        var sigma = Scalar(SigmaArray[i]);
        var (alphaT, sigmaT) = AlphaSigma(sigma);
        Tensor x0;
        switch (Config.PredictionType)
        {
            case "epsilon":
                x0 = (sample - sigmaT * modelOutput) / alphaT;
                break;
            case "sample":
                x0 = modelOutput;
                break;
            case "v_prediction":
                x0 = alphaT * sample - sigmaT * modelOutput;
                break;
            default:
                // flow_prediction: diffusers rebinds sigma_t to the raw sigma here, and the noise below divides by it.
                sigmaT = sigma;
                x0 = sample - sigmaT * modelOutput;
                break;
        }
        return (sample - alphaT * x0) / sigmaT;
    }

    /// <summary><c>deis_first_order_update</c> (DDIM): from sigma[i] to sigma[i + 1].</summary>
    private Tensor FirstOrder(Tensor eps, Tensor sample, int i)
    {
        var (alphaT, sigmaT) = AlphaSigma(Scalar(SigmaArray[i + 1]));
        var (alphaS, sigmaS) = AlphaSigma(Scalar(SigmaArray[i]));
        var h = Lambda(alphaT, sigmaT) - Lambda(alphaS, sigmaS);
        return (alphaT / alphaS) * sample - (sigmaT * (h.exp() - 1.0)) * eps;
    }

    /// <summary>rho = sigma_t / alpha_t at sigma index <paramref name="index"/>, and alpha_t.</summary>
    private (Tensor Rho, Tensor Alpha) RhoAt(int index)
    {
        var (alpha, sigma) = AlphaSigma(Scalar(SigmaArray[index]));
        return (sigma / alpha, alpha);
    }

    /// <summary>
    /// diffusers takes these logs with <c>np.log</c> of 0-dim float32 tensors (numpy's float32 log, wrapped back into a
    /// tensor); numpy's SIMD log is not correctly rounded and differs by version and CPU, so this takes the correctly
    /// rounded value (float64 log rounded once), as <see cref="NumpyMath.LogF32"/> does for the schedules.
    /// </summary>
    private static Tensor NpLog(Tensor x) => x.to(ScalarType.Float64).log().to(ScalarType.Float32);

    /// <summary>The integral of the linear Lagrange basis in log(rho) through b (1 there) and c (0 there), at t.</summary>
    private static Tensor Integral2(Tensor t, Tensor b, Tensor c) =>
        t * (-NpLog(c) + NpLog(t) - 1) / (NpLog(b) - NpLog(c));

    /// <summary>The integral of the quadratic Lagrange basis in log(rho) through b (1 there), c and d (0 there), at t.</summary>
    private static Tensor Integral3(Tensor t, Tensor b, Tensor c, Tensor d)
    {
        var numerator = t * (NpLog(c) * (NpLog(d) - NpLog(t) + 1) - NpLog(d) * NpLog(t) + NpLog(d) + NpLog(t).pow(2) - 2 * NpLog(t) + 2);
        var denominator = (NpLog(b) - NpLog(c)) * (NpLog(b) - NpLog(d));
        return numerator / denominator;
    }

    /// <summary><c>multistep_deis_second_order_update</c>: from sigma[i] to sigma[i + 1] with the noise at i and i - 1.</summary>
    private Tensor SecondOrder(Tensor sample, int i)
    {
        var (rhoT, alphaT) = RhoAt(i + 1);
        var (rhoS0, alphaS0) = RhoAt(i);
        var (rhoS1, _) = RhoAt(i - 1);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var coef1 = Integral2(rhoT, rhoS0, rhoS1) - Integral2(rhoS0, rhoS0, rhoS1);
        var coef2 = Integral2(rhoT, rhoS1, rhoS0) - Integral2(rhoS0, rhoS1, rhoS0);
        return alphaT * (sample / alphaS0 + coef1 * m0 + coef2 * m1);
    }

    /// <summary><c>multistep_deis_third_order_update</c>: from sigma[i] to sigma[i + 1] with the noise at i, i - 1, i - 2.</summary>
    private Tensor ThirdOrder(Tensor sample, int i)
    {
        var (rhoT, alphaT) = RhoAt(i + 1);
        var (rhoS0, alphaS0) = RhoAt(i);
        var (rhoS1, _) = RhoAt(i - 1);
        var (rhoS2, _) = RhoAt(i - 2);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var m2 = _modelOutputs[^3]!;
        var coef1 = Integral3(rhoT, rhoS0, rhoS1, rhoS2) - Integral3(rhoS0, rhoS0, rhoS1, rhoS2);
        var coef2 = Integral3(rhoT, rhoS1, rhoS2, rhoS0) - Integral3(rhoS0, rhoS1, rhoS2, rhoS0);
        var coef3 = Integral3(rhoT, rhoS2, rhoS0, rhoS1) - Integral3(rhoS0, rhoS2, rhoS0, rhoS1);
        return alphaT * (sample / alphaS0 + coef1 * m0 + coef2 * m1 + coef3 * m2);
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
