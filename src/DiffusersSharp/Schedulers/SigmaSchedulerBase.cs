using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// What the sigma-based schedulers (Euler, Euler ancestral, LMS, DPM-Solver) share: the sigma schedule kept on the CPU,
/// the step index found from the first timestep (the second match when a timestep repeats) or set by
/// <see cref="DiffusionSchedulerBase.SetBeginIndex"/>, and diffusers' <c>add_noise</c> index rules.
/// </summary>
public abstract class SigmaSchedulerBase : DiffusionSchedulerBase
{
    private Tensor? _sigmasTensor;

    private protected SigmaSchedulerBase(BetaScheduleConfig config, float[] alphasCumprod) : base(config, alphasCumprod)
    {
        // __init__'s sigmas: the training sigmas, largest first, then 0.
        var trainSigmas = TrainingSigmas(alphasCumprod);
        SigmaArray = new float[trainSigmas.Length + 1];
        for (int i = 0; i < trainSigmas.Length; i++) SigmaArray[i] = trainSigmas[trainSigmas.Length - 1 - i];
    }

    private protected float[] SigmaArray { get; set; }

    /// <summary>The sigmas (float32), one more than the timesteps (the final sigma, usually 0).</summary>
    public IReadOnlyList<float> SigmaValues => SigmaArray;

    /// <summary><c>scheduler.sigmas</c> as a float32 CPU tensor owned by the scheduler.</summary>
    public Tensor Sigmas => _sigmasTensor ??= tensor(SigmaArray, ScalarType.Float32).DetachFromDisposeScope();

    /// <summary>Index of the next step, or null before the first <see cref="ScaleModelInput"/> / <see cref="DiffusionSchedulerBase.Step"/>.</summary>
    public int? StepIndex { get; private protected set; }

    /// <summary><c>((1 - a) / a) ** 0.5</c> per training timestep, float32 (ascending in t).</summary>
    private protected static float[] TrainingSigmas(float[] alphasCumprod) =>
        Array.ConvertAll(alphasCumprod, a => MathF.Sqrt((1f - a) / a));

    /// <summary>The spacing that decides <see cref="InitNoiseSigma"/>.</summary>
    private protected abstract string TimestepSpacing { get; }

    /// <summary>The step index of a timestep not in the schedule, or null to reject it (DPM-Solver takes the last).</summary>
    private protected virtual int? IndexWhenMissing => null;

    /// <summary>
    /// The standard deviation of the initial noise: the largest sigma for the "linspace" / "trailing" spacings, else
    /// <c>sqrt(max_sigma² + 1)</c> (float32).
    /// </summary>
    public override double InitNoiseSigma
    {
        get
        {
            float max = SigmaArray.Max();
            return TimestepSpacing is "linspace" or "trailing" ? max : MathF.Sqrt(max * max + 1f);
        }
    }

    /// <summary>Installs the inference sigmas and timesteps and resets the step and begin index.</summary>
    private protected void InstallSigmas(float[] timesteps, float[] sigmas, Device? device)
    {
        _sigmasTensor?.Dispose();
        _sigmasTensor = null;
        SigmaArray = sigmas;
        StepIndex = null;
        InstallSchedule(timesteps, device);
    }

    /// <summary>
    /// The index of <paramref name="timestep"/> in the timesteps: the second match when it occurs several times (so a
    /// schedule entered midway does not skip a sigma), as diffusers' <c>index_for_timestep</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public int IndexForTimestep(float timestep) => TimestepIndex.Find(TimestepArray, timestep, ClassName, IndexWhenMissing);

    /// <summary>diffusers' <c>_init_step_index</c>.</summary>
    private protected int EnsureStepIndex(float timestep)
    {
        StepIndex ??= BeginIndex ?? IndexForTimestep(timestep);
        return StepIndex.Value;
    }

    /// <summary>The step index of <see cref="DiffusionSchedulerBase.Step"/>, checked against the schedule.</summary>
    private protected int CurrentStep(float timestep)
    {
        RequireTimesteps();
        int i = EnsureStepIndex(timestep);
        if (i + 1 >= SigmaArray.Length)
            throw new InvalidOperationException($"{ClassName}: all {NumInferenceSteps} steps are done; call SetTimesteps again.");
        return i;
    }

    /// <summary><c>sample / ((sigma ** 2 + 1) ** 0.5)</c> at the current step (finding it from the timestep on the first call).</summary>
    public override Tensor ScaleModelInput(Tensor sample, float timestep)
    {
        ArgumentNullException.ThrowIfNull(sample);
        int i = EnsureStepIndex(timestep);
        using var scope = NewDisposeScope();
        var sigma = Scalar(SigmaArray[i]);
        var scaled = sample / (sigma.pow(2) + 1).pow(0.5);
        return scaled.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers' sigma-based <c>add_noise</c>: sigma (in the sample's dtype) at the index of the timestep when no begin
    /// index is set, else at the step index, else at the begin index; then <see cref="NoiseAt"/>.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree or the timestep is not in the schedule.</exception>
    public override Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep)
    {
        using var scope = NewDisposeScope();
        var sigma = TimestepIndex.SigmaForNoise(SigmaArray, BeginIndex, StepIndex, () => IndexForTimestep(timestep), originalSamples, noise);
        return NoiseAt(originalSamples, noise, sigma).MoveToOuterDisposeScope();
    }

    /// <summary>The noised sample at <paramref name="sigma"/> (shape [B, 1, ...]): <c>x0 + noise * sigma</c> for the Euler family.</summary>
    private protected virtual Tensor NoiseAt(Tensor originalSamples, Tensor noise, Tensor sigma) => originalSamples + noise * sigma;

    private protected override void ReleaseState()
    {
        _sigmasTensor?.Dispose();
        _sigmasTensor = null;
        base.ReleaseState();
    }

    /// <summary>numpy's <c>np.log(sigmas)</c> of the float32 training sigmas (the table of <see cref="NumpyMath.SigmaToT"/>).</summary>
    private protected float[] LogTrainingSigmas() => NumpyMath.LogF32(TrainingSigmas(AlphasCumprod.ToArray()));
}
