using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// What diffusers' two KDPM2 schedulers (k-diffusion's DPM-Solver-2, with and without ancestral noise) share: the
/// spaced timesteps and sigmas (Heun's, interpolated or converted), each sigma but the first doubled for the two model
/// evaluations of a step, the interpolated sigmas between them (float32, correctly rounded log / exp) and their timesteps (float32
/// <c>_sigma_to_t</c>), and the first-order sample kept between the two halves. <see cref="Order"/> is 2.
/// </summary>
public abstract class KDPM2SchedulerBase : SigmaSchedulerBase
{
    private Tensor? _sample;
    private bool _converted;

    private protected KDPM2SchedulerBase(KDPM2SchedulerConfigBase config, string owner)
        : base(config, BetaSchedules.AlphasCumprod(config, rescaleZeroSnr: false, zeroSnrLast: false, owner))
    {
        BaseKdpmConfig = config;
        if ((config.UseKarrasSigmas ? 1 : 0) + (config.UseExponentialSigmas ? 1 : 0) + (config.UseBetaSigmas ? 1 : 0) > 1)
            throw new ArgumentException("Only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used.", nameof(config));
        if (config.PredictionType == "sample")
            throw new NotSupportedException($"{owner} does not implement prediction_type \"sample\" (diffusers does not either).");
        if (config.PredictionType is not ("epsilon" or "v_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, v_prediction.", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
    }

    private KDPM2SchedulerConfigBase BaseKdpmConfig { get; }

    /// <summary>2: two model evaluations per step (the interpolated timestep between each pair).</summary>
    public override int Order => 2;

    /// <summary>float64 after a sigma conversion (numpy's float64 timesteps), else float32, as diffusers.</summary>
    private protected override ScalarType TimestepDtype => _converted ? ScalarType.Float64 : ScalarType.Float32;

    private protected override string TimestepSpacing => BaseKdpmConfig.TimestepSpacing;

    /// <summary>The interpolated sigmas (<c>sigmas_interpol</c>), doubled as the sigmas.</summary>
    private protected float[] InterpolArray { get; private set; } = Array.Empty<float>();

    /// <summary>True when the next <see cref="DiffusionSchedulerBase.Step"/> is the first half of a step.</summary>
    public bool StateInFirstOrder => _sample is null;

    /// <summary>
    /// diffusers' <c>set_timesteps</c>: spaced float32 timesteps and their interpolated (or converted) sigmas with 0
    /// appended; the interpolated sigmas of the subclass (torch float32 ops on those n + 1 sigmas); then every entry
    /// but the first doubled, and the timesteps interleaved with the interpolated sigmas' timesteps.
    /// </summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        var c = BaseKdpmConfig;
        int n = numInferenceSteps;
        float[] ts = TimestepSpacings.Float32(c.TimestepSpacing, c.NumTrainTimesteps, n, c.StepsOffset);
        float[] train = TrainingSigmas(AlphasCumprod.ToArray());
        float[] logSigmas = NumpyMath.LogF32(train);
        double[] sigmas = Array.ConvertAll(ts, x => NumpyMath.Interp(x, train));
        _converted = c.UseKarrasSigmas || c.UseExponentialSigmas || c.UseBetaSigmas;
        if (_converted)
        {
            double min = c.SigmaMin ?? sigmas[^1], max = c.SigmaMax ?? sigmas[0];
            sigmas = c.UseKarrasSigmas ? NumpyMath.Karras(min, max, n)
                : c.UseExponentialSigmas ? NumpyMath.Exponential(min, max, n) : NumpyMath.Beta(min, max, n);
            double[] t64 = Array.ConvertAll(sigmas, s => NumpyMath.SigmaToT(s, logSigmas));
            if (c.UseKarrasSigmas) t64 = Array.ConvertAll(t64, NumpyMath.Round);
            ts = Array.ConvertAll(t64, v => (float)v);
        }
        var sigmas32 = new float[n + 1];
        for (int i = 0; i < n; i++) sigmas32[i] = (float)sigmas[i];

        float[] interpol = Interpolated(sigmas32);
        float[] tInterpol = Array.ConvertAll(interpol, s => NumpyMath.SigmaToTFloat32(s, logSigmas));

        var timesteps = new List<float>(2 * n) { ts[0] };
        for (int k = 1; k < n; k++)
        {
            timesteps.Add(tInterpol[InterleavedIndex(k)]);
            timesteps.Add(ts[k]);
        }
        InstallSigmas(timesteps.ToArray(), Doubled(sigmas32), device);
        InterpolArray = Doubled(interpol);
        NumInferenceSteps = n;
    }

    /// <summary>The interpolated sigmas from the n + 1 sigmas (the last 0), in float32 as diffusers' tensor ops.</summary>
    private protected abstract float[] Interpolated(float[] sigmas);

    /// <summary>
    /// <c>a.log().lerp(b.log(), 0.5).exp()</c> on float32 values: torch's lerp at weight 0.5 is <c>end - (end - start) *
    /// 0.5</c> (NaN for two infinite logs); log and exp are correctly rounded (float64, rounded once), where torch's
    /// vectorized float32 exp / log are an ulp off for some values, differently in each version (see
    /// tools/reference/pyenv/modern_float32.py, which makes the reference do the same).
    /// </summary>
    private protected static float GeometricMean(float a, float b)
    {
        float start = (float)Math.Log(a), end = (float)Math.Log(b);
        return (float)Math.Exp(end - (end - start) * 0.5f);
    }

    /// <summary>Which interpolated timestep precedes timestep <paramref name="k"/> (k &gt;= 1).</summary>
    private protected abstract int InterleavedIndex(int k);

    /// <summary><c>cat([v[:1], v[1:].repeat_interleave(2), v[-1:]])</c>.</summary>
    private protected static float[] Doubled(float[] v)
    {
        var result = new float[2 * v.Length];
        result[0] = v[0];
        for (int i = 1; i < v.Length; i++) result[2 * i - 1] = result[2 * i] = v[i];
        result[^1] = v[^1];
        return result;
    }

    /// <summary>The sigma that scales the model input in the second half (the interpolated sigma of the step).</summary>
    private protected abstract float SecondHalfSigma(int stepIndex);

    /// <summary>
    /// <c>sample / ((sigma ** 2 + 1) ** 0.5)</c> with the step's sigma, or its interpolated sigma in the second half. The
    /// divisor is the correctly rounded float32 square root, as torch 1.13 and numpy give it: libtorch 2.10's float32
    /// sqrt of a 0-dim tensor can be an ulp above it (0x40456ECE for 2.91831² + 1, not ...ECD), and the second half's
    /// <c>(x - x0) / sigma</c> cancels enough to turn that ulp into 1e-6 of the sample.
    /// </summary>
    public override Tensor ScaleModelInput(Tensor sample, float timestep)
    {
        ArgumentNullException.ThrowIfNull(sample);
        int i = EnsureStepIndex(timestep);
        float sigma = StateInFirstOrder ? SigmaArray[i] : SecondHalfSigma(i);
        using var scope = NewDisposeScope();
        return (sample / Scalar(MathF.Sqrt(sigma * sigma + 1f))).MoveToOuterDisposeScope();
    }

    /// <summary>The predicted x0 at <paramref name="sigmaInput"/> (epsilon or v_prediction).</summary>
    private protected Tensor PredictOriginal(Tensor modelOutput, Tensor sample, Tensor sigmaInput) =>
        BaseKdpmConfig.PredictionType == "epsilon"
            ? sample - sigmaInput * modelOutput
            : modelOutput * (-sigmaInput / (sigmaInput.pow(2) + 1).pow(0.5)) + sample / (sigmaInput.pow(2) + 1);

    /// <summary>Keeps the first half's sample (an alias, outside the caller's dispose scope).</summary>
    private protected void KeepSample(Tensor sample)
    {
        _sample?.Dispose();
        _sample = sample.alias().DetachFromDisposeScope();
    }

    /// <summary>Returns the kept sample (in the caller's dispose scope) and goes back to the first half.</summary>
    private protected Tensor TakeSample()
    {
        var sample = _sample!.alias();
        _sample.Dispose();
        _sample = null;
        return sample;
    }

    private protected override void ReleaseState()
    {
        _sample?.Dispose();
        _sample = null;
        base.ReleaseState();
    }
}
