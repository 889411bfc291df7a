using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Pseudo numerical methods for diffusion models (diffusers' <c>PNDMScheduler</c>): Runge-Kutta warm-up steps, then
/// linear multistep (PLMS) steps on the noise prediction. With <c>skip_prk_steps</c> (Stable Diffusion) the warm-up is
/// replaced by a repeated second timestep whose output is averaged with the first.
/// </summary>
public sealed class PNDMScheduler : DiffusionSchedulerBase
{
    private const int PndmOrder = 4;
    private readonly float _finalAlphaCumprod;
    private readonly List<Tensor> _ets = new();
    private Tensor? _curModelOutput;
    private Tensor? _curSample;
    private int _prkCount;
    private int _counter;

    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    public PNDMScheduler(PNDMSchedulerConfig? config = null) : this(config ?? new PNDMSchedulerConfig(), 0) { }

    private PNDMScheduler(PNDMSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, rescaleZeroSnr: false, zeroSnrLast: false, nameof(PNDMScheduler)))
    {
        Config = config;
        if (config.PredictionType is not ("epsilon" or "v_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, v_prediction.", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
        _finalAlphaCumprod = config.SetAlphaToOne ? 1f : AlphasCumprod[0];
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static PNDMScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<PNDMSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public PNDMSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(PNDMScheduler);

    /// <summary>1.0.</summary>
    public override double InitNoiseSigma => 1.0;

    /// <summary>Model evaluations so far in this generation (diffusers' <c>counter</c>).</summary>
    public int Counter => _counter;

    private protected override ScalarType TimestepDtype => ScalarType.Int64;

    /// <summary>
    /// diffusers' <c>set_timesteps</c>: the spaced timesteps (ascending <c>_timesteps</c>), then the Runge-Kutta
    /// timesteps (12, unless skipped) and the PLMS ones (with the repeated second entry when skipping).
    /// </summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        int n = numInferenceSteps, T = Config.NumTrainTimesteps;
        long[] asc = Config.TimestepSpacing switch
        {
            "linspace" => Array.ConvertAll(NumpyMath.Linspace(0, T - 1, n), v => (long)NumpyMath.Round(v)),
            "leading" => Enumerable.Range(0, n).Select(i => (long)i * (T / n) + Config.StepsOffset).ToArray(),
            _ => Array.ConvertAll(NumpyMath.Arange(T, 0, -((double)T / n)), v => (long)NumpyMath.Round(v)).Reverse().Select(v => v - 1).ToArray(),
        };
        var prk = new List<long>();
        var plms = new List<long>();
        if (Config.SkipPrkSteps)
        {
            // concatenate([_timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:]])[::-1]
            var seq = new List<long>(asc.Take(asc.Length - 1));
            if (asc.Length >= 2) seq.Add(asc[^2]);
            seq.Add(asc[^1]);
            seq.Reverse();
            plms = seq;
        }
        else
        {
            if (asc.Length < PndmOrder)
                throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps,
                    "PNDMScheduler with Runge-Kutta warm-up (skip_prk_steps false) needs at least 4 inference steps.");
            // last four repeated twice, plus [0, T // n // 2] tiled; [:-1].repeat(2)[1:-1] reversed.
            long half = T / n / 2;
            var pairs = new List<long>();
            foreach (long v in asc[^PndmOrder..]) { pairs.Add(v); pairs.Add(v + half); }
            pairs.RemoveAt(pairs.Count - 1);
            var doubled = pairs.SelectMany(v => new[] { v, v }).ToList();
            prk = doubled.GetRange(1, doubled.Count - 2);
            prk.Reverse();
            plms = asc[..^3].Reverse().ToList();
        }
        _prkCount = prk.Count;
        InstallSchedule(prk.Concat(plms).Select(v => (float)v).ToArray(), device);
        NumInferenceSteps = n;
    }

    /// <summary>
    /// One PNDM step: a Runge-Kutta sub-step while in the warm-up, else a PLMS step. Returns the previous sample.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called.</exception>
    /// <exception cref="ArgumentException">The timestep is not a whole number.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        RequireTimesteps();
        int t = WholeTimestep(timestep);
        return _counter < _prkCount && !Config.SkipPrkSteps ? StepPrk(modelOutput, t, sample) : StepPlms(modelOutput, t, sample);
    }

    private Tensor StepPrk(Tensor modelOutput, int timestep, Tensor sample)
    {
        int n = NumInferenceSteps!.Value, T = Config.NumTrainTimesteps;
        int diffToPrev = _counter % 2 != 0 ? 0 : T / n / 2;
        int prevTimestep = timestep - diffToPrev;
        int t = (int)TimestepArray[_counter / 4 * 4];
        using var scope = NewDisposeScope();
        switch (_counter % 4)
        {
            case 0:
                Accumulate(modelOutput * (1.0 / 6));
                _ets.Add(modelOutput.alias().DetachFromDisposeScope());
                Replace(ref _curSample, sample.alias());
                break;
            case 1:
            case 2:
                Accumulate(modelOutput * (1.0 / 3));
                break;
            default:
                modelOutput = (_curModelOutput is null ? 0 + modelOutput * (1.0 / 6) : _curModelOutput + modelOutput * (1.0 / 6));
                Replace(ref _curModelOutput, null);
                break;
        }
        var curSample = _curSample ?? sample;
        var prev = PrevSample(curSample, t, prevTimestep, modelOutput);
        _counter++;
        return prev.MoveToOuterDisposeScope();
    }

    private Tensor StepPlms(Tensor modelOutput, int timestep, Tensor sample)
    {
        if (!Config.SkipPrkSteps && _ets.Count < 3)
            throw new InvalidOperationException("PNDMScheduler can only run PLMS steps after at least 12 Runge-Kutta steps (skip_prk_steps is false).");
        int n = NumInferenceSteps!.Value, T = Config.NumTrainTimesteps;
        int prevTimestep = timestep - T / n;
        using var scope = NewDisposeScope();
        if (_counter != 1)
        {
            while (_ets.Count > 3) { _ets[0].Dispose(); _ets.RemoveAt(0); }
            _ets.Add(modelOutput.alias().DetachFromDisposeScope());
        }
        else
        {
            prevTimestep = timestep;
            timestep = timestep + T / n;
        }

        Tensor eps;
        Tensor? stored = null;
        if (_ets.Count == 1 && _counter == 0)
        {
            eps = modelOutput;
            Replace(ref _curSample, sample.alias());
        }
        else if (_ets.Count == 1 && _counter == 1)
        {
            eps = (modelOutput + _ets[^1]) / 2;
            stored = _curSample;
            sample = stored ?? sample;
            _curSample = null;
        }
        else if (_ets.Count == 2)
            eps = (3 * _ets[^1] - _ets[^2]) / 2;
        else if (_ets.Count == 3)
            eps = (23 * _ets[^1] - 16 * _ets[^2] + 5 * _ets[^3]) / 12;
        else
            eps = (1.0 / 24) * (55 * _ets[^1] - 59 * _ets[^2] + 37 * _ets[^3] - 9 * _ets[^4]);

        var prev = PrevSample(sample, timestep, prevTimestep, eps);
        stored?.Dispose();
        _counter++;
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>_get_prev_sample</c> (PNDM paper, formula 9), with 0-dim float32 alpha products.</summary>
    private Tensor PrevSample(Tensor sample, int timestep, int prevTimestep, Tensor modelOutput)
    {
        if (timestep < 0 || timestep >= AlphasCumprod.Count)
            throw new ArgumentException($"Timestep {timestep} is outside [0, {AlphasCumprod.Count}).", nameof(timestep));
        var alphaProdT = Scalar(AlphasCumprod[timestep]);
        var alphaProdTPrev = Scalar(prevTimestep >= 0 ? AlphasCumprod[prevTimestep] : _finalAlphaCumprod);
        var betaProdT = 1 - alphaProdT;
        var betaProdTPrev = 1 - alphaProdTPrev;
        if (Config.PredictionType == "v_prediction")
            modelOutput = alphaProdT.pow(0.5) * modelOutput + betaProdT.pow(0.5) * sample;
        var sampleCoeff = (alphaProdTPrev / alphaProdT).pow(0.5);
        var denom = alphaProdT * betaProdTPrev.pow(0.5) + (alphaProdT * betaProdT * alphaProdTPrev).pow(0.5);
        return sampleCoeff * sample - (alphaProdTPrev - alphaProdT) * modelOutput / denom;
    }

    private void Accumulate(Tensor term)
    {
        // cur_model_output starts as the int 0: 0 + term, then in-place +=.
        if (_curModelOutput is null) _curModelOutput = (0 + term).DetachFromDisposeScope();
        else _curModelOutput.add_(term);
    }

    private static void Replace(ref Tensor? slot, Tensor? value)
    {
        slot?.Dispose();
        slot = value?.DetachFromDisposeScope();
    }

    /// <summary>DDPM's forward process at integer <paramref name="timestep"/>: <c>sqrt(a) x0 + sqrt(1 - a) noise</c>.</summary>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep) =>
        AddNoiseByAlphas(originalSamples, noise, timestep);

    private protected override void ReleaseState()
    {
        foreach (var e in _ets) e.Dispose();
        _ets.Clear();
        Replace(ref _curModelOutput, null);
        Replace(ref _curSample, null);
        _counter = 0;
        base.ReleaseState();
    }
}
