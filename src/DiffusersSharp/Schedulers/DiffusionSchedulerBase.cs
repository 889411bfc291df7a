using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// What the DDPM-family schedulers share: the training <c>alphas_cumprod</c>, the inference timesteps, the begin index
/// and the tensors the scheduler owns. The step math lives in each scheduler, written line by line after diffusers
/// (its 0-dim float32 CPU scalars are 0-dim float32 CPU tensors here, in the same order of operations).
/// </summary>
public abstract class DiffusionSchedulerBase : IDiffusionScheduler
{
    private readonly float[] _alphasCumprod;
    private Tensor? _timestepsTensor;
    private Device _device = CPU;

    private protected DiffusionSchedulerBase(BetaScheduleConfig config, float[] alphasCumprod)
    {
        BaseConfig = config;
        _alphasCumprod = alphasCumprod;
    }

    private protected BetaScheduleConfig BaseConfig { get; }

    private protected float[] TimestepArray { get; set; } = Array.Empty<float>();

    /// <summary>The dtype diffusers gives <c>scheduler.timesteps</c> (int64 or float32).</summary>
    private protected abstract ScalarType TimestepDtype { get; }

    /// <inheritdoc/>
    public abstract string ClassName { get; }

    /// <inheritdoc/>
    public virtual int Order => 1;

    /// <inheritdoc/>
    public int NumTrainTimesteps => BaseConfig.NumTrainTimesteps;

    /// <inheritdoc/>
    public string PredictionType => BaseConfig.PredictionType;

    /// <inheritdoc/>
    public abstract double InitNoiseSigma { get; }

    /// <inheritdoc/>
    public IReadOnlyList<float> TimestepValues => TimestepArray;

    /// <inheritdoc/>
    public int? NumInferenceSteps { get; private protected set; }

    /// <inheritdoc/>
    public int? BeginIndex { get; private set; }

    /// <summary>The training schedule's cumulative alpha products (float32, as torch computes them).</summary>
    public IReadOnlyList<float> AlphasCumprod => _alphasCumprod;

    /// <summary><c>scheduler.timesteps</c>: the timesteps in diffusers' dtype, on the device of <see cref="SetTimesteps"/>;
    /// owned by the scheduler (dispose the scheduler to free it).</summary>
    public Tensor Timesteps => _timestepsTensor ??= OwnTimesteps();

    private Tensor OwnTimesteps()
    {
        using var scope = NewDisposeScope();
        return tensor(TimestepArray, ScalarType.Float32).to(TimestepDtype).to(_device).DetachFromDisposeScope();
    }

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
    public virtual Tensor ScaleModelInput(Tensor sample, float timestep)
    {
        ArgumentNullException.ThrowIfNull(sample);
        return sample.alias();
    }

    /// <inheritdoc/>
    public abstract Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null);

    /// <inheritdoc/>
    public abstract Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep);

    /// <summary>Frees the tensors the scheduler owns (timesteps, sigmas, multistep history).</summary>
    public void Dispose()
    {
        ReleaseSchedule();
        ReleaseState();
        GC.SuppressFinalize(this);
    }

    /// <summary>Drops the per-generation state (multistep history) and cached tensors; called by every
    /// <see cref="SetTimesteps"/> and by <see cref="Dispose"/>.</summary>
    private protected virtual void ReleaseState() { }

    /// <summary>Installs a new inference schedule: timesteps, device, no begin index.</summary>
    private protected void InstallSchedule(float[] timesteps, Device? device)
    {
        ReleaseSchedule();
        TimestepArray = timesteps;
        _device = device ?? CPU;
        BeginIndex = null;
        ReleaseState();
    }

    private void ReleaseSchedule()
    {
        _timestepsTensor?.Dispose();
        _timestepsTensor = null;
    }

    /// <summary>The interface's bounds on the number of steps.</summary>
    private protected void CheckStepCount(int numInferenceSteps)
    {
        if (numInferenceSteps < 1 || numInferenceSteps > BaseConfig.NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps,
                $"The number of inference steps must be between 1 and num_train_timesteps ({BaseConfig.NumTrainTimesteps}).");
    }

    private protected void RequireTimesteps()
    {
        if (NumInferenceSteps is null)
            throw new InvalidOperationException($"{ClassName}: call SetTimesteps before Step.");
    }

    /// <summary>A 0-dim float32 CPU tensor: diffusers' <c>self.alphas_cumprod[t]</c> / <c>self.sigmas[i]</c>.</summary>
    private protected static Tensor Scalar(float value) => tensor(value, ScalarType.Float32);

    /// <summary>An integer timestep given as a float (the interface's type), checked to be whole.</summary>
    private protected int WholeTimestep(float timestep)
    {
        if (timestep != MathF.Floor(timestep) || float.IsInfinity(timestep))
            throw new ArgumentException($"{ClassName} takes integer timesteps; {timestep:R} is not one. Pass a value of TimestepValues.", nameof(timestep));
        return (int)timestep;
    }

    /// <summary>
    /// DDPM's forward process, <c>sqrt(a) * x0 + sqrt(1 - a) * noise</c> with <c>a = alphas_cumprod[t]</c> taken in
    /// the sample's dtype, one per batch element, as PNDM / DDIM <c>add_noise</c>.
    /// </summary>
    private protected Tensor AddNoiseByAlphas(Tensor originalSamples, Tensor noise, float timestep)
    {
        ArgumentNullException.ThrowIfNull(originalSamples);
        ArgumentNullException.ThrowIfNull(noise);
        int t = WholeTimestep(timestep);
        if (t < 0 || t >= _alphasCumprod.Length)
            throw new ArgumentOutOfRangeException(nameof(timestep), timestep, $"Timestep must be in [0, {_alphasCumprod.Length}).");
        using var scope = NewDisposeScope();
        var dev = originalSamples.device;
        var alphas = tensor(_alphasCumprod, ScalarType.Float32).to(dev).to(originalSamples.dtype);
        var index = full(new[] { originalSamples.shape[0] }, (long)t, ScalarType.Int64, dev);
        var sqrtAlpha = alphas.index_select(0, index).pow(0.5).flatten();
        sqrtAlpha = Unsqueezed(sqrtAlpha, originalSamples.dim());
        var sqrtOneMinus = (1 - alphas.index_select(0, index)).pow(0.5).flatten();
        sqrtOneMinus = Unsqueezed(sqrtOneMinus, originalSamples.dim());
        var noisy = sqrtAlpha * originalSamples + sqrtOneMinus * noise;
        return noisy.MoveToOuterDisposeScope();
    }

    /// <summary>Adds trailing singleton dims until <paramref name="dims"/> (diffusers' <c>while ...: unsqueeze(-1)</c>).</summary>
    private protected static Tensor Unsqueezed(Tensor t, long dims)
    {
        while (t.dim() < dims) t = t.unsqueeze(-1);
        return t;
    }

    /// <summary>diffusers' <c>randn_tensor(shape, generator, device, dtype)</c>.</summary>
    private protected static Tensor RandnLike(long[] shape, ScalarType dtype, Device device, Runtime.Generator? generator) =>
        generator is null ? randn(shape, dtype: dtype, device: device) : generator.Randn(shape, dtype, device);
}
