using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// DPM-Solver++ singlestep (diffusers' <c>DPMSolverSinglestepScheduler</c>): the steps cycle through orders 1, 2(, 3);
/// a first-order step keeps its sample, and the higher-order steps after it start again from that kept sample with the
/// model outputs gathered since, so each group of steps is one singlestep update of that order. Algorithm types
/// <c>dpmsolver++</c> and <c>sde-dpmsolver++</c>, midpoint and heun, in diffusers' order of operations.
/// </summary>
public sealed class DPMSolverSinglestepScheduler : MultistepSolverBase
{
    private readonly Tensor?[] _modelOutputs;
    private Tensor? _sample;
    private int[] _orders = Array.Empty<int>();

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">An option diffusers has that this port does not implement.</exception>
    public DPMSolverSinglestepScheduler(DPMSolverSinglestepSchedulerConfig? config = null)
        : this(config ?? new DPMSolverSinglestepSchedulerConfig(), 0) { }

    private DPMSolverSinglestepScheduler(DPMSolverSinglestepSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, rescaleZeroSnr: false, zeroSnrLast: false, nameof(DPMSolverSinglestepScheduler)))
    {
        Config = config;
        CheckSolverConfig(config, nameof(DPMSolverSinglestepScheduler));
        string algorithm = config.AlgorithmType == "deis" ? "dpmsolver++" : config.AlgorithmType;
        if (algorithm == "dpmsolver")
            throw new NotSupportedException("algorithm_type \"dpmsolver\" (deprecated in diffusers) is not implemented; use dpmsolver++ or sde-dpmsolver++.");
        if (algorithm is not ("dpmsolver++" or "sde-dpmsolver++"))
            throw new ArgumentException($"algorithm_type \"{config.AlgorithmType}\" is not implemented; use dpmsolver++ or sde-dpmsolver++.", nameof(config));
        Algorithm = algorithm;
        SolverType = config.SolverType is "logrho" or "bh1" or "bh2" ? "midpoint" : config.SolverType;
        if (SolverType is not ("midpoint" or "heun"))
            throw new ArgumentException($"solver_type \"{config.SolverType}\" is not implemented; use midpoint or heun.", nameof(config));
        if (config.FinalSigmasType is not ("zero" or "sigma_min"))
            throw new ArgumentException($"final_sigmas_type must be one of zero, sigma_min, got \"{config.FinalSigmasType}\".", nameof(config));
        _modelOutputs = new Tensor?[config.SolverOrder];
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static DPMSolverSinglestepScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<DPMSolverSinglestepSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public DPMSolverSinglestepSchedulerConfig Config { get; }

    /// <summary>The algorithm in use (<c>deis</c> maps to <c>dpmsolver++</c>, as diffusers does).</summary>
    public string Algorithm { get; }

    /// <summary>The second-order update in use (<c>logrho</c> / <c>bh1</c> / <c>bh2</c> map to <c>midpoint</c>).</summary>
    public string SolverType { get; }

    /// <summary>The order of each step of the last <see cref="SetTimesteps"/> (diffusers' <c>order_list</c>).</summary>
    public IReadOnlyList<int> OrderList => _orders;

    /// <inheritdoc/>
    public override string ClassName => nameof(DPMSolverSinglestepScheduler);

    private protected override string TimestepSpacing => "linspace";

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c>: linspace int64 timesteps below the lambda clip, the
    /// multistep solvers' sigmas, and the order of each step.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        var (timesteps, sigmas) = MultistepSchedule.Compute(numInferenceSteps, Config.NumTrainTimesteps, AlphasCumprod.ToArray(), new()
        {
            Spacing = "linspace", LastTimestep = Config.NumTrainTimesteps - MultistepSchedule.ClippedIndex(AlphasCumprod, Config.LambdaMinClipped),
            Karras = Config.UseKarrasSigmas, Exponential = Config.UseExponentialSigmas, Beta = Config.UseBetaSigmas,
            SigmaMin = Config.SigmaMin, SigmaMax = Config.SigmaMax, FinalSigmasType = Config.FinalSigmasType,
        });
        InstallSigmas(timesteps, sigmas, device);
        NumInferenceSteps = numInferenceSteps;
        // diffusers registers lower_order_final = True for a zero final sigma or steps that the order does not divide.
        bool lowerOrderFinal = Config.LowerOrderFinal || numInferenceSteps % Config.SolverOrder != 0 || Config.FinalSigmasType == "zero";
        _orders = OrdersFor(numInferenceSteps, Config.SolverOrder, lowerOrderFinal, Config.FinalSigmasType == "zero");
    }

    /// <summary>diffusers' <c>get_order_list</c>.</summary>
    private static int[] OrdersFor(int steps, int order, bool lowerOrderFinal, bool zeroFinal)
    {
        static IEnumerable<int> Cycle(int order, int times) => Enumerable.Repeat(Enumerable.Range(1, order), Math.Max(times, 0)).SelectMany(c => c);
        List<int> orders;
        if (order == 1) orders = Enumerable.Repeat(1, steps).ToList();
        else if (!lowerOrderFinal) orders = Cycle(order, steps / order).ToList();
        else if (order == 3)
            orders = (steps % 3) switch
            {
                0 => Cycle(3, steps / 3 - 1).Concat(new[] { 1, 2, 1 }).ToList(),
                1 => Cycle(3, steps / 3).Append(1).ToList(),
                _ => Cycle(3, steps / 3).Concat(new[] { 1, 2 }).ToList(),
            };
        else
            orders = steps % 2 == 0 ? Cycle(2, steps / 2 - 1).Concat(new[] { 1, 1 }).ToList() : Cycle(2, steps / 2).Append(1).ToList();
        if (zeroFinal && orders.Count > 0) orders[^1] = 1;
        return orders.ToArray();
    }

    /// <summary>
    /// One singlestep DPM-Solver step: converts the model output to the x0 prediction, shifts the history, takes the
    /// step's order (lowered while the history is short), keeps the sample on a first-order step, and applies the
    /// update of that order from the kept sample. The SDE variant draws noise from <paramref name="generator"/> at every step.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        var x0 = ConvertModelOutput(modelOutput, sample, i);
        _modelOutputs[0]?.Dispose();
        for (int k = 0; k < _modelOutputs.Length - 1; k++) _modelOutputs[k] = _modelOutputs[k + 1];
        _modelOutputs[^1] = x0.alias().DetachFromDisposeScope();
        Tensor? noise = Algorithm == "sde-dpmsolver++" ? RandnLike(x0.shape, x0.dtype, x0.device, generator) : null;

        int order = _orders[i];
        while (_modelOutputs[^order] is null) order--;
        if (order == 1)
        {
            _sample?.Dispose();
            _sample = sample.alias().DetachFromDisposeScope();
        }
        var from = _sample!;
        var prev = order switch
        {
            1 => FirstOrder(from, noise, i),
            2 => SecondOrder(from, noise, i),
            _ => ThirdOrder(from, noise, i),
        };
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    private Tensor ConvertModelOutput(Tensor modelOutput, Tensor sample, int i) =>
        DataPrediction(modelOutput, sample, i, Config.PredictionType, Config.VarianceType is "learned" or "learned_range");

    /// <summary>alpha_t, sigma_t and lambda at sigma index <paramref name="index"/>.</summary>
    private (Tensor Alpha, Tensor Sigma, Tensor Lambda) At(int index)
    {
        var (alpha, sigma) = AlphaSigma(Scalar(SigmaArray[index]));
        return (alpha, sigma, Lambda(alpha, sigma));
    }

    private Tensor FirstOrder(Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT, lambdaT) = At(i + 1);
        var (_, sigmaS, lambdaS) = At(i);
        var m = _modelOutputs[^1]!;
        var h = lambdaT - lambdaS;
        if (noise is null)
            return (sigmaT / sigmaS) * sample - (alphaT * ((-h).exp() - 1.0)) * m;
        return (sigmaT / sigmaS * (-h).exp()) * sample
            + (alphaT * (1 - (-2.0 * h).exp())) * m
            + sigmaT * (1.0 - (-2 * h).exp()).sqrt() * noise;
    }

    /// <summary>From the sample kept at sigma[i - 1] to sigma[i + 1] with the model outputs at i - 1 and i.</summary>
    private Tensor SecondOrder(Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT, lambdaT) = At(i + 1);
        var (_, _, lambdaS0) = At(i);
        var (_, sigmaS1, lambdaS1) = At(i - 1);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var h = lambdaT - lambdaS1;
        var h0 = lambdaS0 - lambdaS1;
        var r0 = h0 / h;
        var d0 = m1;
        var d1 = (1.0 / r0) * (m0 - m1);
        return DpmSolverPlusPlusSecondOrder(sample, noise, SolverType, alphaT, sigmaT, sigmaS1, h, d0, d1);
    }

    /// <summary>From the sample kept at sigma[i - 2] to sigma[i + 1] with the model outputs at i - 2, i - 1 and i.</summary>
    private Tensor ThirdOrder(Tensor sample, Tensor? noise, int i)
    {
        var (alphaT, sigmaT, lambdaT) = At(i + 1);
        var (_, _, lambdaS0) = At(i);
        var (_, _, lambdaS1) = At(i - 1);
        var (_, sigmaS2, lambdaS2) = At(i - 2);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var m2 = _modelOutputs[^3]!;
        var h = lambdaT - lambdaS2;
        var h0 = lambdaS0 - lambdaS2;
        var h1 = lambdaS1 - lambdaS2;
        var r0 = h0 / h;
        var r1 = h1 / h;
        var d0 = m2;
        var d10 = (1.0 / r1) * (m1 - m2);
        var d11 = (1.0 / r0) * (m0 - m2);
        var d1 = (r0 * d10 - r1 * d11) / (r0 - r1);
        var d2 = 2.0 * (d11 - d10) / (r0 - r1);
        if (noise is null)
        {
            if (SolverType == "midpoint")
                return (sigmaT / sigmaS2) * sample
                    - (alphaT * ((-h).exp() - 1.0)) * d0
                    + (alphaT * (((-h).exp() - 1.0) / h + 1.0)) * d11;
            return (sigmaT / sigmaS2) * sample
                - (alphaT * ((-h).exp() - 1.0)) * d0
                + (alphaT * (((-h).exp() - 1.0) / h + 1.0)) * d1
                - (alphaT * (((-h).exp() - 1.0 + h) / h.pow(2) - 0.5)) * d2;
        }
        if (SolverType == "midpoint")
            return (sigmaT / sigmaS2 * (-h).exp()) * sample
                + (alphaT * (1.0 - (-2.0 * h).exp())) * d0
                + (alphaT * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0)) * d11
                + sigmaT * (1.0 - (-2 * h).exp()).sqrt() * noise;
        return (sigmaT / sigmaS2 * (-h).exp()) * sample
            + (alphaT * (1.0 - (-2.0 * h).exp())) * d0
            + (alphaT * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0)) * d1
            + (alphaT * ((1.0 - (-2.0 * h).exp() + (-2.0 * h)) / (-2.0 * h).pow(2) - 0.5)) * d2
            + sigmaT * (1.0 - (-2 * h).exp()).sqrt() * noise;
    }

    private protected override void ReleaseState()
    {
        for (int k = 0; k < _modelOutputs.Length; k++)
        {
            _modelOutputs[k]?.Dispose();
            _modelOutputs[k] = null;
        }
        _sample?.Dispose();
        _sample = null;
        base.ReleaseState();
    }
}
