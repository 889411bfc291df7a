using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>How training timesteps are drawn (diffusers' <c>compute_density_for_timestep_sampling</c>).</summary>
public enum TimestepSampling
{
    /// <summary><c>u ~ U(0, 1)</c>.</summary>
    Uniform,

    /// <summary><c>u = sigmoid(n)</c>, <c>n ~ N(logit_mean, logit_std)</c>: SD3's choice, favouring middle timesteps.</summary>
    LogitNormal,

    /// <summary>Mode sampling with heavy tails: <c>u = 1 - r - mode_scale (cos²(π r / 2) - 1 + r)</c>, <c>r ~ U(0, 1)</c>.</summary>
    Mode,
}

/// <summary>Per-sample loss weighting (diffusers' <c>compute_loss_weighting_for_sd3</c>).</summary>
public enum LossWeighting
{
    /// <summary>Weight 1.</summary>
    None,

    /// <summary><c>sigma^-2</c>.</summary>
    SigmaSqrt,

    /// <summary><c>2 / (π (1 - 2 sigma + 2 sigma²))</c>.</summary>
    CosMap,
}

/// <summary>Options of <see cref="FlowMatchingObjective"/>; the defaults are SD3's (logit-normal timesteps, no loss weighting).</summary>
public sealed record FlowMatchingOptions
{
    /// <summary>Timestep density.</summary>
    public TimestepSampling Sampling { get; init; } = TimestepSampling.LogitNormal;

    /// <summary>Mean of the logit-normal density.</summary>
    public double LogitMean { get; init; }

    /// <summary>Standard deviation of the logit-normal density.</summary>
    public double LogitStd { get; init; } = 1.0;

    /// <summary>Scale of the mode density.</summary>
    public double ModeScale { get; init; } = 1.29;

    /// <summary>Loss weighting.</summary>
    public LossWeighting Weighting { get; init; } = LossWeighting.None;

    /// <summary>Throws unless the logit-normal std is positive and the other parameters are finite.</summary>
    /// <exception cref="ArgumentException">An invalid parameter.</exception>
    public void Validate()
    {
        if (!(LogitStd > 0) || !double.IsFinite(LogitStd)) throw new ArgumentException($"logit std must be positive, got {LogitStd}.");
        if (!double.IsFinite(LogitMean) || !double.IsFinite(ModeScale)) throw new ArgumentException($"logit mean and mode scale must be finite, got {LogitMean} and {ModeScale}.");
    }

    /// <summary>The names diffusers' SD3 training scripts accept for <c>--weighting_scheme</c>.</summary>
    public static IReadOnlyList<string> WeightingSchemes { get; } = ["logit_normal", "mode", "sigma_sqrt", "cosmap", "none"];

    /// <summary>
    /// The options diffusers' SD3 training scripts derive from <c>--weighting_scheme</c>: <c>logit_normal</c> and
    /// <c>mode</c> choose the timestep density (no loss weight); <c>sigma_sqrt</c>, <c>cosmap</c> and <c>none</c> draw
    /// timesteps uniformly and choose the loss weight.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="scheme"/> is not one of <see cref="WeightingSchemes"/>, or
    /// <paramref name="logitStd"/> is not positive.</exception>
    public static FlowMatchingOptions FromWeightingScheme(string scheme, double logitMean = 0, double logitStd = 1, double modeScale = 1.29)
    {
        // The density parameters are checked even where the scheme does not use them: a typo should not pass silently.
        new FlowMatchingOptions { LogitMean = logitMean, LogitStd = logitStd, ModeScale = modeScale }.Validate();
        return scheme switch
        {
            "logit_normal" => new() { Sampling = TimestepSampling.LogitNormal, LogitMean = logitMean, LogitStd = logitStd },
            "mode" => new() { Sampling = TimestepSampling.Mode, ModeScale = modeScale },
            "sigma_sqrt" => new() { Sampling = TimestepSampling.Uniform, Weighting = LossWeighting.SigmaSqrt },
            "cosmap" => new() { Sampling = TimestepSampling.Uniform, Weighting = LossWeighting.CosMap },
            "none" => new() { Sampling = TimestepSampling.Uniform },
            _ => throw new ArgumentException($"weighting scheme must be one of {string.Join(", ", WeightingSchemes)}, got '{scheme}'."),
        };
    }
}

/// <summary>One drawn training example batch of the flow-matching objective (tensors owned by the caller's dispose scope).</summary>
/// <param name="Indices">Indices into the training schedule, one per sample.</param>
/// <param name="Timesteps">[B] float32: the scheduler's training timesteps at <paramref name="Indices"/> (σ·1000), the model input.</param>
/// <param name="Sigmas">[B] float32: the training sigmas at <paramref name="Indices"/>.</param>
/// <param name="NoisyInput">(1 - σ) x0 + σ noise.</param>
/// <param name="Target">noise - x0 (the velocity).</param>
/// <param name="Weighting">[B] float32 per-sample loss weights.</param>
public sealed record FlowMatchingBatch(long[] Indices, Tensor Timesteps, Tensor Sigmas, Tensor NoisyInput, Tensor Target, Tensor Weighting);

/// <summary>
/// The rectified-flow training objective of Stable Diffusion 3, as diffusers' SD3 training scripts compute it: draw
/// <c>u</c> from the timestep density, take <c>indices = (u · num_train_timesteps).long()</c>, read the timesteps and
/// sigmas of the scheduler's training schedule (so the shift of the scheduler config applies), noise the clean latents
/// with <c>x_σ = (1 - σ) x0 + σ ε</c> and regress the model output on the velocity <c>ε - x0</c> (no preconditioning):
/// <c>loss = mean_b( mean( w_b (pred_b - target_b)² ) )</c>.
/// </summary>
public sealed class FlowMatchingObjective
{
    private readonly float[] _timesteps;
    private readonly float[] _sigmas;

    /// <summary>Creates the objective over the training schedule of <paramref name="schedulerConfig"/>.</summary>
    public FlowMatchingObjective(FlowMatchEulerDiscreteSchedulerConfig schedulerConfig, FlowMatchingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(schedulerConfig);
        Options = options ?? new FlowMatchingOptions();
        Options.Validate();
        // A fresh scheduler holds the training schedule (set_timesteps is never called on it).
        using var scheduler = new FlowMatchEulerDiscreteScheduler(schedulerConfig);
        _timesteps = scheduler.TimestepValues.ToArray();
        _sigmas = scheduler.SigmaValues.ToArray();
        NumTrainTimesteps = schedulerConfig.NumTrainTimesteps;
    }

    /// <summary>The options.</summary>
    public FlowMatchingOptions Options { get; }

    /// <summary>Length of the training schedule.</summary>
    public int NumTrainTimesteps { get; }

    /// <summary>The training timesteps (descending, σ·T).</summary>
    public IReadOnlyList<float> TrainingTimesteps => _timesteps;

    /// <summary>The training sigmas (descending).</summary>
    public IReadOnlyList<float> TrainingSigmas => _sigmas;

    /// <summary>Draws <c>u</c> in [0, 1) from the timestep density, on the CPU with <paramref name="generator"/>.</summary>
    public Tensor SampleDensity(int batch, torch.Generator generator)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        using var scope = NewDisposeScope();
        Tensor u;
        switch (Options.Sampling)
        {
            case TimestepSampling.LogitNormal:
                u = (randn([batch], dtype: ScalarType.Float32, generator: generator) * Options.LogitStd + Options.LogitMean).sigmoid();
                break;
            case TimestepSampling.Mode:
                var r = rand([batch], dtype: ScalarType.Float32, generator: generator);
                u = 1 - r - Options.ModeScale * ((Math.PI * r / 2).cos().pow(2) - 1 + r);
                break;
            default:
                u = rand([batch], dtype: ScalarType.Float32, generator: generator);
                break;
        }
        return u.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Schedule indices for densities <paramref name="u"/>: <c>(u · T).long()</c>, clamped into the schedule (a float32
    /// sigmoid can round to exactly 1).
    /// </summary>
    public long[] Indices(Tensor u)
    {
        ArgumentNullException.ThrowIfNull(u);
        var values = u.to(ScalarType.Float32).cpu().data<float>().ToArray();
        var indices = new long[values.Length];
        for (int i = 0; i < values.Length; i++)
            indices[i] = Math.Clamp((long)(values[i] * NumTrainTimesteps), 0, NumTrainTimesteps - 1);
        return indices;
    }

    /// <summary>Per-sample loss weights for <paramref name="sigmas"/> [B].</summary>
    public Tensor Weighting(Tensor sigmas)
    {
        ArgumentNullException.ThrowIfNull(sigmas);
        using var scope = NewDisposeScope();
        var s = sigmas.to(ScalarType.Float32);
        var w = Options.Weighting switch
        {
            LossWeighting.SigmaSqrt => s.pow(-2.0),
            LossWeighting.CosMap => 2.0 / (Math.PI * (1 - 2 * s + 2 * s.pow(2))),
            _ => ones_like(s),
        };
        return w.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Draws timesteps (with <paramref name="generator"/>) and uses <paramref name="noise"/> to build the model input
    /// and target for clean latents <paramref name="x0"/> [B, ...].
    /// </summary>
    /// <exception cref="ArgumentException">The noise shape differs from the latents'.</exception>
    public FlowMatchingBatch Sample(Tensor x0, Tensor noise, torch.Generator generator)
    {
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(noise);
        if (!x0.shape.SequenceEqual(noise.shape))
            throw new ArgumentException($"noise [{string.Join(", ", noise.shape)}] must have the latents' shape [{string.Join(", ", x0.shape)}].", nameof(noise));
        int batch = (int)x0.shape[0];
        using var scope = NewDisposeScope();
        var indices = Indices(SampleDensity(batch, generator));
        var timesteps = tensor(indices.Select(i => _timesteps[i]).ToArray(), device: x0.device);
        var sigmas = tensor(indices.Select(i => _sigmas[i]).ToArray(), device: x0.device);
        var noisy = AddNoise(x0, noise, sigmas);
        var target = Target(x0, noise);
        var weighting = Weighting(sigmas);
        return new FlowMatchingBatch(indices, timesteps.MoveToOuterDisposeScope(), sigmas.MoveToOuterDisposeScope(),
            noisy.MoveToOuterDisposeScope(), target.MoveToOuterDisposeScope(), weighting.MoveToOuterDisposeScope());
    }

    /// <summary><c>(1 - σ) x0 + σ noise</c>, σ [B] broadcast over the other dimensions, in the latents' dtype.</summary>
    public static Tensor AddNoise(Tensor x0, Tensor noise, Tensor sigmas)
    {
        using var scope = NewDisposeScope();
        var s = Broadcast(sigmas, x0);
        return ((1.0 - s) * x0 + s * noise).MoveToOuterDisposeScope();
    }

    /// <summary>The velocity target <c>noise - x0</c>.</summary>
    public static Tensor Target(Tensor x0, Tensor noise) => noise - x0;

    /// <summary>
    /// <c>mean_b( mean_{c,h,w}( w_b (pred - target)² ) )</c> in float32, as the diffusers scripts reduce it.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes differ, or the weights are not one per sample.</exception>
    public static Tensor Loss(Tensor prediction, Tensor target, Tensor weighting)
    {
        ArgumentNullException.ThrowIfNull(prediction);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(weighting);
        if (!prediction.shape.SequenceEqual(target.shape))
            throw new ArgumentException($"prediction [{string.Join(", ", prediction.shape)}] and target [{string.Join(", ", target.shape)}] differ in shape.");
        if (weighting.numel() != target.shape[0])
            throw new ArgumentException($"weighting has {weighting.numel()} values for a batch of {target.shape[0]}.", nameof(weighting));
        using var scope = NewDisposeScope();
        long batch = target.shape[0];
        var w = Broadcast(weighting.to(ScalarType.Float32), target);
        var err = (w * (prediction.to(ScalarType.Float32) - target.to(ScalarType.Float32)).pow(2)).reshape(batch, -1).mean([1]);
        return err.mean().MoveToOuterDisposeScope();
    }

    private static Tensor Broadcast(Tensor perSample, Tensor like)
    {
        var s = perSample.to(like.dtype, like.device).flatten();
        var shape = new long[like.dim()];
        Array.Fill(shape, 1L);
        shape[0] = s.shape[0];
        return s.view(shape);
    }
}
