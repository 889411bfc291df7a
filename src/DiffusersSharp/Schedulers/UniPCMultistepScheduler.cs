using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// UniPC (Zhao et al. 2023; diffusers' <c>UniPCMultistepScheduler</c>): a multistep predictor (UniP) in log-SNR with a
/// corrector (UniC) that refines the previous step's result with the new model output before predicting again, so it
/// costs no extra model evaluation. Data prediction, B(h) variants bh1 / bh2, orders 1 to 3; diffusers' order of
/// operations on 0-dim float32 tensors, the coefficient systems solved by <c>torch.linalg.solve</c> as there.
/// </summary>
public sealed class UniPCMultistepScheduler : MultistepSolverBase
{
    private readonly Tensor?[] _modelOutputs;
    private Tensor? _lastSample;
    private int _lowerOrderNums;
    private int _thisOrder;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">An option diffusers has that this port does not implement.</exception>
    public UniPCMultistepScheduler(UniPCMultistepSchedulerConfig? config = null)
        : this(config ?? new UniPCMultistepSchedulerConfig(), 0) { }

    private UniPCMultistepScheduler(UniPCMultistepSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: true, nameof(UniPCMultistepScheduler)))
    {
        Config = config;
        CheckSolverConfig(config, nameof(UniPCMultistepScheduler));
        SolverType = config.SolverType is "midpoint" or "heun" or "logrho" ? "bh2" : config.SolverType;
        if (SolverType is not ("bh1" or "bh2"))
            throw new ArgumentException($"solver_type \"{config.SolverType}\" is not implemented; use bh1 or bh2.", nameof(config));
        if (!config.PredictX0)
            throw new NotSupportedException("UniPCMultistepScheduler: predict_x0 false (noise-prediction UniPC) is not implemented in DiffusersSharp.");
        if (config.FinalSigmasType is not ("zero" or "sigma_min"))
            throw new ArgumentException($"final_sigmas_type must be one of zero, sigma_min, got \"{config.FinalSigmasType}\".", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
        _modelOutputs = new Tensor?[config.SolverOrder];
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static UniPCMultistepScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<UniPCMultistepSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public UniPCMultistepSchedulerConfig Config { get; }

    /// <summary>The B(h) variant in use (<c>bh1</c> or <c>bh2</c>).</summary>
    public string SolverType { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(UniPCMultistepScheduler);

    private protected override string TimestepSpacing => Config.TimestepSpacing;

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps)</c> (the multistep solvers' schedule; Karras timesteps rounded).</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        var (timesteps, sigmas) = MultistepSchedule.Compute(numInferenceSteps, Config.NumTrainTimesteps, AlphasCumprod.ToArray(), new()
        {
            Spacing = Config.TimestepSpacing, StepsOffset = Config.StepsOffset, LastTimestep = Config.NumTrainTimesteps,
            Karras = Config.UseKarrasSigmas, Exponential = Config.UseExponentialSigmas, Beta = Config.UseBetaSigmas,
            SigmaMin = Config.SigmaMin, SigmaMax = Config.SigmaMax, FinalSigmasType = Config.FinalSigmasType, FinalFromConverted = true,
        });
        InstallSigmas(timesteps, sigmas, device);
        NumInferenceSteps = timesteps.Length;
    }

    /// <summary>
    /// One UniPC step: the x0 prediction of the model output; the corrector on the sample (from the second step, unless
    /// disabled for the previous step); then the predictor from the corrected sample, its order warmed up and lowered at
    /// the end as diffusers does. The sample keeps its dtype.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        bool useCorrector = i > 0 && !Config.DisableCorrector.Contains(i - 1) && _lastSample is not null;
        var x0 = ConvertModelOutput(modelOutput, sample, i);
        if (useCorrector) sample = Corrector(x0, _lastSample!, sample, _thisOrder, i);

        _modelOutputs[0]?.Dispose();
        for (int k = 0; k < _modelOutputs.Length - 1; k++) _modelOutputs[k] = _modelOutputs[k + 1];
        _modelOutputs[^1] = x0.alias().DetachFromDisposeScope();

        int order = Config.LowerOrderFinal ? Math.Min(Config.SolverOrder, TimestepArray.Length - i) : Config.SolverOrder;
        _thisOrder = Math.Min(order, _lowerOrderNums + 1);
        _lastSample?.Dispose();
        _lastSample = sample.alias().DetachFromDisposeScope();
        var prev = Predictor(sample, _thisOrder, i);
        if (_lowerOrderNums < Config.SolverOrder) _lowerOrderNums++;
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    private Tensor ConvertModelOutput(Tensor modelOutput, Tensor sample, int i) =>
        DataPrediction(modelOutput, sample, i, Config.PredictionType);

    /// <summary>The log-SNR steps and the coefficients shared by UniP and UniC: rks (with 1.0 last), the differences
    /// D1 = (m_i - m0) / r_i, h·φ1 = expm1(-h), B(h), and R (powers of rks) with b, as float32 tensors.</summary>
    private (Tensor AlphaT, Tensor SigmaT, Tensor SigmaS0, Tensor HPhi1, Tensor Bh, Tensor R, Tensor B, List<Tensor> D1s)
        Coefficients(int order, int indexT, int indexS0)
    {
        var (alphaT, sigmaT) = AlphaSigma(Scalar(SigmaArray[indexT]));
        var (alphaS0, sigmaS0) = AlphaSigma(Scalar(SigmaArray[indexS0]));
        var lambdaS0 = Lambda(alphaS0, sigmaS0);
        var h = Lambda(alphaT, sigmaT) - lambdaS0;
        var m0 = _modelOutputs[^1]!;
        var rks = new List<Tensor>();
        var d1s = new List<Tensor>();
        for (int k = 1; k < order; k++)
        {
            int si = indexS0 - k;
            var mi = _modelOutputs[^(k + 1)]!;
            var (alphaSi, sigmaSi) = AlphaSigma(Scalar(SigmaArray[si]));
            var rk = (Lambda(alphaSi, sigmaSi) - lambdaS0) / h;
            rks.Add(rk);
            d1s.Add((mi - m0) / rk);
        }
        rks.Add(Scalar(1f));
        var rksT = cat(rks.Select(r => r.reshape(1)).ToList(), 0);
        var hh = -h;
        var hPhi1 = hh.expm1();
        var hPhiK = hPhi1 / hh - 1;
        long factorial = 1;
        var bh = SolverType == "bh1" ? hh : hh.expm1();
        var rows = new List<Tensor>();
        var bs = new List<Tensor>();
        for (int k = 1; k <= order; k++)
        {
            rows.Add(rksT.pow(k - 1));
            bs.Add(hPhiK * (double)factorial / bh);
            factorial *= k + 1;
            hPhiK = hPhiK / hh - 1.0 / factorial;
        }
        return (alphaT, sigmaT, sigmaS0, hPhi1, bh, stack(rows.ToArray()), cat(bs.Select(b => b.reshape(1)).ToList(), 0), d1s);
    }

    /// <summary><c>multistep_uni_p_bh_update</c>: from sigma[i] to sigma[i + 1].</summary>
    private Tensor Predictor(Tensor x, int order, int i)
    {
        var (alphaT, sigmaT, sigmaS0, hPhi1, bh, r, b, d1s) = Coefficients(order, i + 1, i);
        var xt = sigmaT / sigmaS0 * x - alphaT * hPhi1 * _modelOutputs[^1]!;
        // pred_res = 0, still multiplied: bh1's B(h) is -inf at a final sigma 0, which makes that step NaN in diffusers too.
        if (d1s.Count == 0) return (xt - alphaT * bh * 0).to(x.dtype);
        var rhos = order == 2 ? tensor(new[] { 0.5f }, x.dtype) : linalg.solve(r.narrow(0, 0, order - 1).narrow(1, 0, order - 1), b.narrow(0, 0, order - 1)).to(x.dtype);
        var predRes = einsum("k,bkc...->bc...", rhos, stack(d1s.ToArray(), 1));
        return (xt - alphaT * bh * predRes).to(x.dtype);
    }

    /// <summary><c>multistep_uni_c_bh_update</c>: corrects the sample at sigma[i] with the new x0 <paramref name="modelT"/>
    /// (the history still ends with the previous step's x0).</summary>
    private Tensor Corrector(Tensor modelT, Tensor lastSample, Tensor thisSample, int order, int i)
    {
        var (alphaT, sigmaT, sigmaS0, hPhi1, bh, r, b, d1s) = Coefficients(order, i, i - 1);
        var m0 = _modelOutputs[^1]!;
        var xt = sigmaT / sigmaS0 * lastSample - alphaT * hPhi1 * m0;
        var rhos = order == 1 ? tensor(new[] { 0.5f }, lastSample.dtype) : linalg.solve(r, b).to(lastSample.dtype);
        var d1t = modelT - m0;
        var last = rhos[order - 1] * d1t;
        var corr = d1s.Count == 0 ? last : einsum("k,bkc...->bc...", rhos.narrow(0, 0, order - 1), stack(d1s.ToArray(), 1)) + last;
        return (xt - alphaT * bh * corr).to(lastSample.dtype);
    }

    private protected override void ReleaseState()
    {
        for (int k = 0; k < _modelOutputs.Length; k++)
        {
            _modelOutputs[k]?.Dispose();
            _modelOutputs[k] = null;
        }
        _lastSample?.Dispose();
        _lastSample = null;
        _lowerOrderNums = 0;
        _thisOrder = 0;
        base.ReleaseState();
    }
}
