using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// k-diffusion's DPM-Solver-2 (diffusers' <c>KDPM2DiscreteScheduler</c>, "DPM2"): each step evaluates the model at
/// sigma, takes an Euler step to the geometric mean of sigma and the next sigma, evaluates there and steps from the
/// kept sample to the next sigma with that midpoint derivative.
/// </summary>
public sealed class KDPM2DiscreteScheduler : KDPM2SchedulerBase
{
    /// <summary>Creates the scheduler from its config (call <see cref="KDPM2SchedulerBase.SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">prediction_type "sample" (diffusers does not implement it either).</exception>
    public KDPM2DiscreteScheduler(KDPM2DiscreteSchedulerConfig? config = null)
        : this(config ?? new KDPM2DiscreteSchedulerConfig(), 0) { }

    private KDPM2DiscreteScheduler(KDPM2DiscreteSchedulerConfig config, int _) : base(config, nameof(KDPM2DiscreteScheduler)) =>
        Config = config;

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static KDPM2DiscreteScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<KDPM2DiscreteSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public KDPM2DiscreteSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(KDPM2DiscreteScheduler);

    /// <summary><c>sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp()</c>: the geometric mean with the previous sigma
    /// (the first is NaN and never used).</summary>
    private protected override float[] Interpolated(float[] sigmas)
    {
        var result = new float[sigmas.Length];
        for (int i = 0; i < sigmas.Length; i++) result[i] = GeometricMean(sigmas[i], sigmas[(i + sigmas.Length - 1) % sigmas.Length]);
        return result;
    }

    private protected override int InterleavedIndex(int k) => k;

    private protected override float SecondHalfSigma(int stepIndex) => InterpolArray[stepIndex];

    /// <summary>
    /// One half of a DPM2 step: the first keeps the sample and returns the Euler estimate at the interpolated sigma;
    /// the second steps from the kept sample to the next sigma with the derivative at the interpolated sigma.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="KDPM2SchedulerBase.SetTimesteps"/> was not called, or all steps are done.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        bool first = StateInFirstOrder;
        var sigmaHat = Scalar(first ? SigmaArray[i] : SigmaArray[i - 1]) * (0 + 1);
        var sigmaInterpol = Scalar(first ? InterpolArray[i + 1] : InterpolArray[i]);
        var sigmaNext = Scalar(first ? SigmaArray[i + 1] : SigmaArray[i]);
        var predOriginal = PredictOriginal(modelOutput, sample, first ? sigmaHat : sigmaInterpol);

        Tensor derivative, dt;
        if (first)
        {
            derivative = (sample - predOriginal) / sigmaHat;
            dt = sigmaInterpol - sigmaHat;
            KeepSample(sample);
        }
        else
        {
            derivative = (sample - predOriginal) / sigmaInterpol;
            dt = sigmaNext - sigmaHat;
            sample = TakeSample();
        }
        StepIndex = i + 1;
        return (sample + derivative * dt).MoveToOuterDisposeScope();
    }
}
