using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// DPM-Solver++ multistep (diffusers' <c>DPMSolverMultistepScheduler</c>; with <c>solver_order</c> 2 and Karras sigmas
/// this is "DPM++ 2M Karras"). The data prediction x0 of each step is kept and the update extrapolates it in
/// log-SNR (lambda). Algorithm types <c>dpmsolver++</c> and <c>sde-dpmsolver++</c> are implemented, orders 1 to 3,
/// midpoint and heun, and the flow-matching sigmas (<c>use_flow_sigmas</c>, <c>flow_prediction</c>) Sana's pipelines run;
/// the scalars are 0-dim float32 tensors in diffusers' order of operations.
/// </summary>
public sealed class DPMSolverMultistepScheduler : MultistepSolverBase
{
    private readonly Tensor?[] _modelOutputs;
    private int _lowerOrderNums;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">An option diffusers has that this port does not implement.</exception>
    public DPMSolverMultistepScheduler(DPMSolverMultistepSchedulerConfig? config = null)
        : this(config ?? new DPMSolverMultistepSchedulerConfig(), 0) { }

    private DPMSolverMultistepScheduler(DPMSolverMultistepSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: true, nameof(DPMSolverMultistepScheduler)))
    {
        Config = config;
        CheckSolverConfig(config, nameof(DPMSolverMultistepScheduler), flowSigmasImplemented: true);
        FlowSigmas = config.UseFlowSigmas;
        (Algorithm, SolverType) = DpmSolverPlusPlusVariant(config.AlgorithmType, config.SolverType, nameof(DPMSolverMultistepScheduler), hasDeprecatedForms: true);
        if (config.FinalSigmasType is not ("zero" or "sigma_min"))
            throw new ArgumentException($"final_sigmas_type must be one of zero, sigma_min, got \"{config.FinalSigmasType}\".", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
        _modelOutputs = new Tensor?[config.SolverOrder];
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static DPMSolverMultistepScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<DPMSolverMultistepSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public DPMSolverMultistepSchedulerConfig Config { get; }

    /// <summary>The algorithm in use (<c>deis</c> maps to <c>dpmsolver++</c>, as diffusers does).</summary>
    public string Algorithm { get; }

    /// <summary>The second-order update in use (<c>logrho</c> / <c>bh1</c> / <c>bh2</c> map to <c>midpoint</c>).</summary>
    public string SolverType { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(DPMSolverMultistepScheduler);

    private protected override string TimestepSpacing => Config.TimestepSpacing;

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c>: int64 timesteps, then sigmas (interpolated, or Karras
    /// / lu / exponential / beta with timesteps recovered by <c>_sigma_to_t</c>; or flow sigmas with timesteps
    /// sigma * num_train_timesteps), then the final sigma.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        var (timesteps, sigmas32) = MultistepSchedule.Compute(numInferenceSteps, Config.NumTrainTimesteps, AlphasCumprod.ToArray(), new()
        {
            Spacing = Config.TimestepSpacing, StepsOffset = Config.StepsOffset, LastTimestep = Config.NumTrainTimesteps - MultistepSchedule.ClippedIndex(AlphasCumprod, Config.LambdaMinClipped),
            Karras = Config.UseKarrasSigmas, Exponential = Config.UseExponentialSigmas, Beta = Config.UseBetaSigmas,
            LuLambdas = Config.UseLuLambdas, SigmaMin = Config.SigmaMin, SigmaMax = Config.SigmaMax,
            FinalSigmasType = Config.FinalSigmasType, RoundConverted = Config.BetaSchedule != "squaredcos_cap_v2",
            FlowShift = Config.UseFlowSigmas ? Config.FlowShift : null,
        });
        InstallSigmas(timesteps, sigmas32, device);
        NumInferenceSteps = timesteps.Length;
        _lowerOrderNums = 0;
    }

    /// <summary>
    /// One multistep DPM-Solver step: converts the model output to the x0 prediction, shifts the history, and applies
    /// the first / second / third-order update chosen as diffusers does (warm-up, <c>lower_order_final</c>,
    /// <c>final_sigmas_type</c> zero). SDE variants draw float32 noise from <paramref name="generator"/>.
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
        var x0 = ConvertModelOutput(modelOutput, sample, i);
        _modelOutputs[0]?.Dispose();
        for (int k = 0; k < _modelOutputs.Length - 1; k++) _modelOutputs[k] = _modelOutputs[k + 1];
        _modelOutputs[^1] = x0.alias().DetachFromDisposeScope();

        var x = sample.to(ScalarType.Float32);
        Tensor? noise = Algorithm == "sde-dpmsolver++"
            ? RandnLike(x0.shape, ScalarType.Float32, x0.device, generator)
            : null;

        Tensor prev;
        if (Config.SolverOrder == 1 || _lowerOrderNums < 1 || lowerOrderFinal)
            prev = FirstOrder(x0, x, noise, i);
        else if (Config.SolverOrder == 2 || _lowerOrderNums < 2 || lowerOrderSecond)
            prev = SecondOrder(x, noise, i);
        else
            prev = ThirdOrder(x, noise, i);
        if (_lowerOrderNums < Config.SolverOrder) _lowerOrderNums++;
        var result = prev.to(x0.dtype);
        StepIndex = i + 1;
        return result.MoveToOuterDisposeScope();
    }

    private Tensor ConvertModelOutput(Tensor modelOutput, Tensor sample, int i) =>
        DataPrediction(modelOutput, sample, i, Config.PredictionType, Config.VarianceType is "learned" or "learned_range");

    private Tensor FirstOrder(Tensor m, Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT) = AlphaSigma(Scalar(SigmaArray[i + 1]));
        var (alphaS, sigmaS) = AlphaSigma(Scalar(SigmaArray[i]));
        var h = Lambda(alphaT, sigmaT) - Lambda(alphaS, sigmaS);
        return DpmSolverPlusPlusFirstOrder(sample, noise, alphaT, sigmaT, sigmaS, h, m);
    }

    private Tensor SecondOrder(Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT) = AlphaSigma(Scalar(SigmaArray[i + 1]));
        var (alphaS0, sigmaS0) = AlphaSigma(Scalar(SigmaArray[i]));
        var (alphaS1, sigmaS1) = AlphaSigma(Scalar(SigmaArray[i - 1]));
        var lambdaT = Lambda(alphaT, sigmaT);
        var lambdaS0 = Lambda(alphaS0, sigmaS0);
        var lambdaS1 = Lambda(alphaS1, sigmaS1);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var h = lambdaT - lambdaS0;
        var h0 = lambdaS0 - lambdaS1;
        var r0 = h0 / h;
        var d0 = m0;
        var d1 = (1.0 / r0) * (m0 - m1);
        return DpmSolverPlusPlusSecondOrder(sample, noise, SolverType, alphaT, sigmaT, sigmaS0, h, d0, d1);
    }

    private Tensor ThirdOrder(Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT) = AlphaSigma(Scalar(SigmaArray[i + 1]));
        var (alphaS0, sigmaS0) = AlphaSigma(Scalar(SigmaArray[i]));
        var (alphaS1, sigmaS1) = AlphaSigma(Scalar(SigmaArray[i - 1]));
        var (alphaS2, sigmaS2) = AlphaSigma(Scalar(SigmaArray[i - 2]));
        var lambdaT = Lambda(alphaT, sigmaT);
        var lambdaS0 = Lambda(alphaS0, sigmaS0);
        var lambdaS1 = Lambda(alphaS1, sigmaS1);
        var lambdaS2 = Lambda(alphaS2, sigmaS2);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var m2 = _modelOutputs[^3]!;
        var h = lambdaT - lambdaS0;
        var h0 = lambdaS0 - lambdaS1;
        var h1 = lambdaS1 - lambdaS2;
        var r0 = h0 / h;
        var r1 = h1 / h;
        var d0 = m0;
        var d10 = (1.0 / r0) * (m0 - m1);
        var d11 = (1.0 / r1) * (m1 - m2);
        var d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
        var d2 = (1.0 / (r0 + r1)) * (d10 - d11);
        if (noise is null) return DpmSolverPlusPlusThirdOrder(sample, alphaT, sigmaT, sigmaS0, h, d0, d1, d2);
        return (sigmaT / sigmaS0 * (-h).exp()) * sample
            + (alphaT * (1.0 - (-2.0 * h).exp())) * d0
            + (alphaT * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0)) * d1
            + (alphaT * ((1.0 - (-2.0 * h).exp() - 2.0 * h) / (2.0 * h).pow(2) - 0.5)) * d2
            + sigmaT * (1.0 - (-2 * h).exp()).sqrt() * noise;
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
