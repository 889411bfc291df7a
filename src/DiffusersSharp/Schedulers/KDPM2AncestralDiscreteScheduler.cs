using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// k-diffusion's DPM-Solver-2 ancestral (diffusers' <c>KDPM2AncestralDiscreteScheduler</c>, "DPM2 a"): each step goes
/// down to <c>sigma_down</c> through the geometric mean of sigma and sigma_down, then adds fresh noise of
/// <c>sigma_up</c>, drawn from the generator in the second half as diffusers' <c>randn_tensor</c> does.
/// </summary>
public sealed class KDPM2AncestralDiscreteScheduler : KDPM2SchedulerBase
{
    private float[] _sigmasUp = Array.Empty<float>(), _sigmasDown = Array.Empty<float>();

    /// <summary>Creates the scheduler from its config (call <see cref="KDPM2SchedulerBase.SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An invalid option.</exception>
    /// <exception cref="NotSupportedException">prediction_type "sample" (diffusers does not implement it either).</exception>
    public KDPM2AncestralDiscreteScheduler(KDPM2AncestralDiscreteSchedulerConfig? config = null)
        : this(config ?? new KDPM2AncestralDiscreteSchedulerConfig(), 0) { }

    private KDPM2AncestralDiscreteScheduler(KDPM2AncestralDiscreteSchedulerConfig config, int _)
        : base(config, nameof(KDPM2AncestralDiscreteScheduler)) => Config = config;

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static KDPM2AncestralDiscreteScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<KDPM2AncestralDiscreteSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public KDPM2AncestralDiscreteSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(KDPM2AncestralDiscreteScheduler);

    /// <summary>The up / down sigmas of each step (sigma_up² + sigma_down² = next sigma²) and the geometric mean of sigma
    /// and sigma_down; the last two interpolated sigmas 0, so the last step is a plain Euler step to 0.</summary>
    private protected override float[] Interpolated(float[] sigmas)
    {
        int count = sigmas.Length;
        var up = new float[count];
        var down = new float[count];
        for (int i = 0; i < count; i++)
        {
            // sigmas_next = sigmas.roll(-1) with its last set to 0; then ** 2 is x * x and ** 0.5 a square root.
            float s = sigmas[i], next = i + 1 < count ? sigmas[i + 1] : 0f;
            up[i] = MathF.Sqrt(next * next * (s * s - next * next) / (s * s));
            down[i] = i + 1 < count ? MathF.Sqrt(next * next - up[i] * up[i]) : 0f;
        }
        var interpol = new float[count];
        for (int i = 0; i < count - 2; i++) interpol[i] = GeometricMean(sigmas[i], down[i]);
        _sigmasUp = Doubled(up);
        _sigmasDown = Doubled(down);
        return interpol;
    }

    private protected override int InterleavedIndex(int k) => k - 1;

    private protected override float SecondHalfSigma(int stepIndex) => InterpolArray[stepIndex - 1];

    /// <summary>
    /// One half of a DPM2 ancestral step: the first keeps the sample and returns the Euler estimate at the interpolated
    /// sigma; the second steps from the kept sample to sigma_down with the derivative there and adds
    /// <c>noise * sigma_up</c>, the noise drawn with the model output's shape and dtype from <paramref name="generator"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="KDPM2SchedulerBase.SetTimesteps"/> was not called, or all steps are done.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        bool first = StateInFirstOrder;
        int at = first ? i : i - 1;
        var sigmaHat = Scalar(SigmaArray[at]) * (0 + 1);
        var sigmaInterpol = Scalar(InterpolArray[at]);
        var predOriginal = PredictOriginal(modelOutput, sample, first ? sigmaHat : sigmaInterpol);

        Tensor prev;
        if (first)
        {
            var derivative = (sample - predOriginal) / sigmaHat;
            var dt = sigmaInterpol - sigmaHat;
            KeepSample(sample);
            prev = sample + derivative * dt;
        }
        else
        {
            var derivative = (sample - predOriginal) / sigmaInterpol;
            var dt = Scalar(_sigmasDown[i - 1]) - sigmaHat;
            prev = TakeSample() + derivative * dt;
            var noise = RandnLike(modelOutput.shape, modelOutput.dtype, modelOutput.device, generator);
            prev = prev + noise * Scalar(_sigmasUp[i - 1]);
        }
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }
}
