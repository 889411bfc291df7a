using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// What diffusers' EDM schedulers (Karras et al. 2022) share: a sigma schedule with no beta schedule behind it (Karras or
/// exponential between <c>sigma_min</c> and <c>sigma_max</c>), float timesteps that are the UNet's noise conditioning
/// <c>0.25 * log(sigma)</c>, and the EDM preconditioning: the model input is scaled by
/// <c>c_in = 1 / sqrt(sigma² + sigma_data²)</c> and the denoised sample is <c>c_skip * x + c_out * output</c>. The step
/// index follows the Euler family's rules (found from the first timestep, or set by <see cref="SetBeginIndex"/>), and
/// <c>add_noise</c> is <c>x0 + noise * sigma</c>. The scalars are float32 values in diffusers' order of operations.
/// </summary>
/// <remarks>Stateful and not thread-safe, as in diffusers. Before the first <see cref="SetTimesteps"/> the schedule is
/// empty (diffusers fills it with a training-length schedule that inference never uses).</remarks>
public abstract class EDMSchedulerBase : IDiffusionScheduler
{
    private Tensor? _timestepsTensor, _sigmasTensor;
    private Device _device = CPU;

    private protected EDMSchedulerBase(EDMSchedulerConfigBase config, string className)
    {
        ArgumentNullException.ThrowIfNull(config);
        BaseConfig = config;
        if (config.SigmaSchedule is not ("karras" or "exponential"))
            throw new ArgumentException($"{className}: sigma_schedule must be karras or exponential, got \"{config.SigmaSchedule}\".", nameof(config));
        if (config.SigmaMin is null || config.SigmaMax is null)
            throw new ArgumentException($"{className}: sigma_min and sigma_max must be numbers; this config has them null (as another scheduler's config saves them), which diffusers fails on too. Give the EDM model's values.", nameof(config));
        if (!(config.SigmaMin > 0) || !(config.SigmaMax > config.SigmaMin) || !double.IsFinite(config.SigmaMax.Value))
            throw new ArgumentException($"{className}: need 0 < sigma_min < sigma_max (finite), got {config.SigmaMin} and {config.SigmaMax}.", nameof(config));
        if (!(config.SigmaData > 0) || !double.IsFinite(config.SigmaData))
            throw new ArgumentException($"{className}: sigma_data must be positive, got {config.SigmaData}.", nameof(config));
        if (!(config.Rho > 0) || !double.IsFinite(config.Rho))
            throw new ArgumentException($"{className}: rho must be positive, got {config.Rho}.", nameof(config));
        if (config.PredictionType is not ("epsilon" or "v_prediction"))
            throw new ArgumentException($"{className}: prediction_type must be epsilon or v_prediction, got \"{config.PredictionType}\" (diffusers' EDM preconditioning has no other).", nameof(config));
        if (config.FinalSigmasType is not ("zero" or "sigma_min"))
            throw new ArgumentException($"{className}: final_sigmas_type must be one of zero, sigma_min, got \"{config.FinalSigmasType}\".", nameof(config));
        if (config.NumTrainTimesteps < 1)
            throw new ArgumentException($"{className}: num_train_timesteps must be at least 1, got {config.NumTrainTimesteps}.", nameof(config));
    }

    private protected EDMSchedulerConfigBase BaseConfig { get; }

    private protected float[] SigmaArray { get; private set; } = Array.Empty<float>();

    private protected float[] TimestepArray { get; private set; } = Array.Empty<float>();

    /// <inheritdoc/>
    public abstract string ClassName { get; }

    /// <inheritdoc/>
    public int Order => 1;

    /// <inheritdoc/>
    public int NumTrainTimesteps => BaseConfig.NumTrainTimesteps;

    /// <inheritdoc/>
    public string PredictionType => BaseConfig.PredictionType;

    /// <summary><c>(sigma_max² + 1) ** 0.5</c> (float64, as diffusers' Python float).</summary>
    public double InitNoiseSigma
    {
        get
        {
            double max = BaseConfig.SigmaMax!.Value;
            return Math.Pow(max * max + 1, 0.5);
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<float> TimestepValues => TimestepArray;

    /// <summary>The sigmas (float32), one more than the timesteps (the final sigma: 0, or sigma_min).</summary>
    public IReadOnlyList<float> SigmaValues => SigmaArray;

    /// <inheritdoc/>
    public int? NumInferenceSteps { get; private set; }

    /// <inheritdoc/>
    public int? BeginIndex { get; private set; }

    /// <summary>Index of the next step, or null before the first <see cref="ScaleModelInput"/> / <see cref="Step"/>.</summary>
    public int? StepIndex { get; private protected set; }

    /// <summary><c>scheduler.timesteps</c>: float32, on the device of <see cref="SetTimesteps"/>; owned by the scheduler.</summary>
    public Tensor Timesteps => _timestepsTensor ??= tensor(TimestepArray, ScalarType.Float32).to(_device).DetachFromDisposeScope();

    /// <summary><c>scheduler.sigmas</c> as a float32 CPU tensor owned by the scheduler.</summary>
    public Tensor Sigmas => _sigmasTensor ??= tensor(SigmaArray, ScalarType.Float32).DetachFromDisposeScope();

    /// <inheritdoc/>
    public abstract void SetTimesteps(int numInferenceSteps, Device? device = null);

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="beginIndex"/> is negative.</exception>
    public void SetBeginIndex(int beginIndex)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(beginIndex);
        BeginIndex = beginIndex;
    }

    /// <inheritdoc/>
    public abstract Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null);

    /// <summary>
    /// diffusers' <c>precondition_noise</c>: <c>0.25 * log(sigma)</c> of float32 sigmas, the timesteps the UNet is
    /// conditioned on. The float32 log is the correctly rounded one (computed in float64, rounded once): torch's SIMD
    /// float32 log is an ulp off it on some lanes (libtorch 2.10 on Playground's 25-step sigma 18), and not the same ulp
    /// across versions; the factor 0.25 is exact.
    /// </summary>
    public static float[] PreconditionNoise(IReadOnlyList<float> sigmas)
    {
        ArgumentNullException.ThrowIfNull(sigmas);
        var result = new float[sigmas.Count];
        for (int i = 0; i < result.Length; i++) result[i] = 0.25f * (float)Math.Log(sigmas[i]);
        return result;
    }

    /// <summary>diffusers' <c>precondition_inputs</c>: <c>sample * c_in</c>, <c>c_in = 1 / sqrt(sigma² + sigma_data²)</c>.</summary>
    public Tensor PreconditionInputs(Tensor sample, float sigma)
    {
        ArgumentNullException.ThrowIfNull(sample);
        using var cIn = Scalar(1f / MathF.Sqrt(SigmaDenominator(sigma)));
        return sample * cIn;
    }

    /// <summary>
    /// diffusers' <c>precondition_outputs</c>: the denoised sample <c>c_skip * sample + c_out * model_output</c> with
    /// <c>c_skip = sigma_data² / (sigma² + sigma_data²)</c> and <c>c_out = ±sigma * sigma_data / sqrt(sigma² + sigma_data²)</c>
    /// (minus for v_prediction).
    /// </summary>
    public Tensor PreconditionOutputs(Tensor sample, Tensor modelOutput, float sigma)
    {
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(modelOutput);
        double sd = BaseConfig.SigmaData;
        float den = SigmaDenominator(sigma);
        // Python's `float / tensor` is tensor.reciprocal() * float.
        float cSkip = 1f / den * (float)(sd * sd);
        float cOut = (PredictionType == "epsilon" ? sigma : -sigma) * (float)sd / MathF.Sqrt(den);
        using var scope = NewDisposeScope();
        return (Scalar(cSkip) * sample + Scalar(cOut) * modelOutput).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>sigma ** 2 + sigma_data ** 2</c> as diffusers computes it on a 0-dim float32 tensor (sigma_data² a Python float).
    /// The preconditioning scalars are float32 operations in diffusers' order, each correctly rounded (IEEE), as torch
    /// computes 0-dim tensors; libtorch 2.10's float32 sqrt is not always (sqrt(189.3313) is an ulp off), so they are
    /// computed here rather than as tensors.
    /// </summary>
    private protected float SigmaDenominator(float sigma)
    {
        double sd = BaseConfig.SigmaData;
        return sigma * sigma + (float)(sd * sd);
    }

    /// <summary><c>sample * c_in</c> at the current step (finding the step from the timestep on the first call).</summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called.</exception>
    public Tensor ScaleModelInput(Tensor sample, float timestep)
    {
        ArgumentNullException.ThrowIfNull(sample);
        RequireTimesteps();
        int i = EnsureStepIndex(timestep);
        using var scope = NewDisposeScope();
        return PreconditionInputs(sample, SigmaArray[i]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers' <c>add_noise</c> (the Euler family's): sigma (in the sample's dtype) at the index of the timestep when no
    /// begin index is set, else at the step index, else at the begin index; then <c>x0 + noise * sigma</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree or the timestep is not in the schedule.</exception>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called.</exception>
    public Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep)
    {
        RequireTimesteps();
        using var scope = NewDisposeScope();
        var sigma = TimestepIndex.SigmaForNoise(SigmaArray, BeginIndex, StepIndex, () => IndexForTimestep(timestep), originalSamples, noise);
        return (originalSamples + noise * sigma).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The index of <paramref name="timestep"/> in the timesteps: the second match when it occurs several times, as
    /// diffusers' <c>index_for_timestep</c>; a timestep not in the schedule is refused (Euler) or taken as the last step
    /// (DPM-Solver), as each diffusers class does.
    /// </summary>
    /// <exception cref="ArgumentException">The timestep is not in the schedule (Euler).</exception>
    public int IndexForTimestep(float timestep) => TimestepIndex.Find(TimestepArray, timestep, ClassName, IndexWhenMissing);

    /// <summary>The step index of a timestep not in the schedule, or null to refuse it.</summary>
    private protected virtual int? IndexWhenMissing => null;

    /// <summary>Frees the tensors the scheduler owns (timesteps, sigmas, multistep history).</summary>
    public void Dispose()
    {
        ReleaseTensors();
        ReleaseState();
        GC.SuppressFinalize(this);
    }

    /// <summary>Drops the per-generation state (multistep history); called by every schedule install and by <see cref="Dispose"/>.</summary>
    private protected virtual void ReleaseState() { }

    /// <summary>Computes the sigmas of <paramref name="numInferenceSteps"/> steps (without the final one), float32: the
    /// subclass's Karras / exponential computation.</summary>
    private protected abstract float[] ComputeSigmas(int numInferenceSteps);

    /// <summary>The final sigma appended after <paramref name="sigmas"/> (<c>final_sigmas_type</c>).</summary>
    private protected abstract float FinalSigma(float[] sigmas);

    /// <summary>diffusers' <c>set_timesteps</c> shared part: sigmas, timesteps <c>0.25 * log(sigma)</c>, the final sigma;
    /// resets the step and begin index and the per-generation state.</summary>
    private protected void InstallSchedule(int numInferenceSteps, Device? device)
    {
        if (numInferenceSteps < 1)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps, "The number of inference steps must be at least 1.");
        float[] sigmas = ComputeSigmas(numInferenceSteps);
        float[] timesteps = PreconditionNoise(sigmas);
        var all = new float[sigmas.Length + 1];
        sigmas.CopyTo(all, 0);
        all[^1] = FinalSigma(sigmas);
        ReleaseTensors();
        SigmaArray = all;
        TimestepArray = timesteps;
        _device = device ?? CPU;
        NumInferenceSteps = numInferenceSteps;
        StepIndex = null;
        BeginIndex = null;
        ReleaseState();
    }

    /// <summary>Karras et al.'s schedule on <paramref name="ramp"/> (values in [0, 1]), in the ramp's dtype:
    /// <c>(max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho</c> with the inverse-rho ends as Python floats.</summary>
    private protected Tensor KarrasSigmas(Tensor ramp)
    {
        double rho = BaseConfig.Rho;
        double minInvRho = Math.Pow(BaseConfig.SigmaMin!.Value, 1 / rho);
        double maxInvRho = Math.Pow(BaseConfig.SigmaMax!.Value, 1 / rho);
        return (ramp * (minInvRho - maxInvRho) + maxInvRho).pow(rho);
    }

    /// <summary>k-diffusion's exponential schedule, as diffusers computes it whatever the ramp's dtype:
    /// <c>torch.linspace(log(sigma_min), log(sigma_max), n).exp().flip(0)</c> in float32, the exp correctly rounded (see
    /// <see cref="PreconditionNoise"/>).</summary>
    private protected Tensor ExponentialSigmas(int n)
    {
        var ramp = linspace(Math.Log(BaseConfig.SigmaMin!.Value), Math.Log(BaseConfig.SigmaMax!.Value), n, ScalarType.Float32);
        var sigmas = Array.ConvertAll(ramp.data<float>().ToArray(), v => (float)Math.Exp(v));
        return tensor(sigmas, ScalarType.Float32).flip(0);
    }

    /// <summary>diffusers' <c>_init_step_index</c>.</summary>
    private protected int EnsureStepIndex(float timestep)
    {
        StepIndex ??= BeginIndex ?? IndexForTimestep(timestep);
        return StepIndex.Value;
    }

    /// <summary>The step index of <see cref="Step"/>, checked against the schedule.</summary>
    private protected int CurrentStep(float timestep)
    {
        RequireTimesteps();
        int i = EnsureStepIndex(timestep);
        if (i + 1 >= SigmaArray.Length)
            throw new InvalidOperationException($"{ClassName}: all {NumInferenceSteps} steps are done; call SetTimesteps again.");
        return i;
    }

    private void RequireTimesteps()
    {
        if (NumInferenceSteps is null)
            throw new InvalidOperationException($"{ClassName}: call SetTimesteps first.");
    }

    private void ReleaseTensors()
    {
        _timestepsTensor?.Dispose();
        _timestepsTensor = null;
        _sigmasTensor?.Dispose();
        _sigmasTensor = null;
    }

    /// <summary>A 0-dim float32 CPU tensor: diffusers' <c>self.sigmas[i]</c>.</summary>
    private protected static Tensor Scalar(float value) => tensor(value, ScalarType.Float32);

    /// <summary>diffusers' <c>randn_tensor(shape, generator, device, dtype)</c>.</summary>
    private protected static Tensor RandnLike(long[] shape, ScalarType dtype, Device device, Runtime.Generator? generator) =>
        generator is null ? randn(shape, dtype: dtype, device: device) : generator.Randn(shape, dtype, device);
}
