using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// The linear multistep scheduler (diffusers' <c>LMSDiscreteScheduler</c>, k-diffusion's <c>sample_lms</c>, order 4 by
/// default): the update combines the last derivatives with coefficients that integrate the Lagrange basis polynomials
/// between two sigmas. Like diffusers, the integrand is evaluated in float32 (on the sigma tensor) and integrated by
/// scipy's <c>quad</c> (its 21-point Gauss-Kronrod pass, see <see cref="Quadpack"/>), so the coefficients are
/// diffusers' float64 values.
/// </summary>
public sealed class LMSDiscreteScheduler : SigmaSchedulerBase
{
    private readonly List<Tensor> _derivatives = new();

    /// <summary>Creates the scheduler from its config; like diffusers it starts with the full training schedule.</summary>
    /// <exception cref="ArgumentException">An unknown option, or several sigma conversions at once.</exception>
    public LMSDiscreteScheduler(LMSDiscreteSchedulerConfig? config = null)
        : this(config ?? new LMSDiscreteSchedulerConfig(), 0) { }

    private LMSDiscreteScheduler(LMSDiscreteSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, rescaleZeroSnr: false, zeroSnrLast: false, nameof(LMSDiscreteScheduler)))
    {
        Config = config;
        if ((config.UseKarrasSigmas ? 1 : 0) + (config.UseExponentialSigmas ? 1 : 0) + (config.UseBetaSigmas ? 1 : 0) > 1)
            throw new ArgumentException("Only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used.", nameof(config));
        if (config.PredictionType is not ("epsilon" or "v_prediction" or "sample"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, v_prediction, sample.", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
        SetTimesteps(config.NumTrainTimesteps);
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static LMSDiscreteScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<LMSDiscreteSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public LMSDiscreteSchedulerConfig Config { get; }

    /// <summary>The multistep order of <see cref="Step(Tensor, float, Tensor, Runtime.Generator?)"/> (diffusers' default 4).</summary>
    public int LmsOrder { get; init; } = 4;

    /// <inheritdoc/>
    public override string ClassName => nameof(LMSDiscreteScheduler);

    private protected override ScalarType TimestepDtype => ScalarType.Float32;

    private protected override string TimestepSpacing => Config.TimestepSpacing;

    /// <summary>diffusers' <c>set_timesteps</c>: spaced timesteps, interpolated (or converted) sigmas, then 0; clears the derivatives.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        int n = numInferenceSteps;
        float[] ts = TimestepSpacings.Float32(Config.TimestepSpacing, Config.NumTrainTimesteps, n, Config.StepsOffset);
        float[] train = TrainingSigmas(AlphasCumprod.ToArray());
        double[] sigmas = Array.ConvertAll(ts, x => NumpyMath.Interp(x, train));
        float[] timesteps = ts;
        if (Config.UseKarrasSigmas || Config.UseExponentialSigmas || Config.UseBetaSigmas)
        {
            float[] logSigmas = NumpyMath.LogF32(train);
            // _convert_to_karras reads only the schedule's ends; exponential / beta honour a sigma_min / sigma_max kept in the config.
            sigmas = Config.UseKarrasSigmas ? NumpyMath.Karras(sigmas[^1], sigmas[0], n)
                : Config.UseExponentialSigmas ? NumpyMath.Exponential(Config.SigmaMin ?? sigmas[^1], Config.SigmaMax ?? sigmas[0], n)
                : NumpyMath.Beta(Config.SigmaMin ?? sigmas[^1], Config.SigmaMax ?? sigmas[0], n);
            timesteps = Array.ConvertAll(sigmas, s => (float)NumpyMath.SigmaToT(s, logSigmas));
        }
        var sigmas32 = new float[sigmas.Length + 1];
        for (int i = 0; i < sigmas.Length; i++) sigmas32[i] = (float)sigmas[i];
        InstallSigmas(timesteps, sigmas32, device);
        NumInferenceSteps = n;
    }

    /// <summary>
    /// diffusers' <c>get_lms_coefficient</c>: the integral from sigma[t] to sigma[t+1] of the Lagrange basis polynomial
    /// of <paramref name="currentOrder"/>, its factors computed as float32 tensor ops are (<c>tau</c> rounded to float32).
    /// </summary>
    internal double LmsCoefficient(int order, int t, int currentOrder) => LmsCoefficient(order, t, currentOrder, out _);

    /// <summary><see cref="LmsCoefficient(int, int, int)"/>, saying whether scipy's quad stops after its first pass there.</summary>
    internal double LmsCoefficient(int order, int t, int currentOrder, out bool exactQuadPath)
    {
        float[] s = SigmaArray;
        double Derivative(double tau)
        {
            bool any = false;
            float prod = 1f;
            for (int k = 0; k < order; k++)
            {
                if (k == currentOrder) continue;
                float factor = ((float)tau - s[t - k]) / (s[t - currentOrder] - s[t - k]);
                prod = any ? prod * factor : factor;
                any = true;
            }
            return any ? prod : 1.0;
        }
        return Quadpack.Integrate(Derivative, s[t], s[t + 1], 1e-4, out exactQuadPath);
    }

    /// <summary>
    /// One LMS step: the derivative <c>(sample - x0) / sigma</c> joins the history (at most <see cref="LmsOrder"/>), then
    /// <c>sample + sum(coeff * derivative)</c>, newest first, with <c>min(step + 1, order)</c> terms.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        if (LmsOrder < 1) throw new InvalidOperationException($"LmsOrder must be at least 1, got {LmsOrder}.");
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        var sigma = Scalar(SigmaArray[i]);
        var predOriginal = Config.PredictionType switch
        {
            "epsilon" => sample - sigma * modelOutput,
            "v_prediction" => modelOutput * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + sample / (sigma.pow(2) + 1),
            _ => modelOutput,
        };
        var derivative = ((sample - predOriginal) / sigma).DetachFromDisposeScope();
        _derivatives.Add(derivative);
        if (_derivatives.Count > LmsOrder)
        {
            _derivatives[0].Dispose();
            _derivatives.RemoveAt(0);
        }
        int order = Math.Min(i + 1, LmsOrder);
        var coeffs = new double[order];
        for (int c = 0; c < order; c++) coeffs[c] = LmsCoefficient(order, i, c);

        // Python's sum() starts from 0 and pairs coefficient 0 with the newest derivative.
        Tensor? total = null;
        for (int c = 0; c < order && c < _derivatives.Count; c++)
        {
            var term = _derivatives[_derivatives.Count - 1 - c] * coeffs[c];
            total = total is null ? term + 0 : total + term;
        }
        var prev = total is null ? sample + 0 : sample + total;
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }

    private protected override void ReleaseState()
    {
        foreach (var d in _derivatives) d.Dispose();
        _derivatives.Clear();
        base.ReleaseState();
    }
}
