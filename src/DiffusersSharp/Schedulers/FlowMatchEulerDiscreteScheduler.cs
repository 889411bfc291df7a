using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// The Euler scheduler for rectified-flow models (diffusers' <c>FlowMatchEulerDiscreteScheduler</c>), as used by
/// Stable Diffusion 3 / 3.5. The schedule is computed on the CPU in exactly the float32 / float64 order of diffusers, so
/// timesteps and sigmas are bit-for-bit equal to the Python ones. The model predicts the velocity
/// <c>v = noise - x0</c>, with <c>x_sigma = sigma * noise + (1 - sigma) * x0</c>.
/// </summary>
/// <remarks>
/// The scheduler owns the tensors behind <see cref="Timesteps"/> and <see cref="Sigmas"/> (they live outside any dispose
/// scope); dispose the scheduler to free them. It is stateful (step index) and not thread-safe, as in diffusers.
/// </remarks>
public sealed class FlowMatchEulerDiscreteScheduler : IDisposable
{
    private float[] _timesteps;
    private float[] _sigmas;
    private double _shift;
    private double _sigmaMin;
    private readonly double _sigmaMax;
    private Device _device = CPU;
    private Tensor? _timestepsTensor;
    private Tensor? _sigmasTensor;

    /// <summary>Creates the scheduler from its config (the training schedule; call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">The config combines several sigma conversions, or has an unknown
    /// <c>time_shift_type</c> or a non-positive <c>num_train_timesteps</c>.</exception>
    public FlowMatchEulerDiscreteScheduler(FlowMatchEulerDiscreteSchedulerConfig? config = null)
    {
        Config = config ?? new FlowMatchEulerDiscreteSchedulerConfig();
        if (Config.NumTrainTimesteps < 1)
            throw new ArgumentException($"num_train_timesteps must be at least 1, got {Config.NumTrainTimesteps}.", nameof(config));
        int conversions = (Config.UseKarrasSigmas ? 1 : 0) + (Config.UseExponentialSigmas ? 1 : 0) + (Config.UseBetaSigmas ? 1 : 0);
        if (conversions > 1)
            throw new ArgumentException("Only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be set.", nameof(config));
        if (Config.TimeShiftType is not ("exponential" or "linear"))
            throw new ArgumentException($"time_shift_type must be \"exponential\" or \"linear\", got \"{Config.TimeShiftType}\".", nameof(config));

        // __init__: np.linspace(1, T, T, float32)[::-1] / T, shifted in float32 torch arithmetic.
        int t = Config.NumTrainTimesteps;
        _shift = Config.Shift;
        float fShift = (float)Config.Shift, fShiftMinus1 = (float)(Config.Shift - 1.0), fT = t;
        double[] lin = Linspace(1, t, t);
        _sigmas = new float[t];
        _timesteps = new float[t];
        for (int i = 0; i < t; i++)
        {
            float s = (float)lin[t - 1 - i] / fT;
            if (!Config.UseDynamicShifting) s = fShift * s / (1f + fShiftMinus1 * s);
            _sigmas[i] = s;
            _timesteps[i] = s * fT;
        }
        _sigmaMin = _sigmas[^1];
        _sigmaMax = _sigmas[0];
    }

    /// <summary>Reads <c>scheduler_config.json</c> from <paramref name="folderOrFile"/> (a scheduler folder or the file).</summary>
    public static FlowMatchEulerDiscreteScheduler FromPretrained(string folderOrFile)
    {
        string path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, "scheduler_config.json") : folderOrFile;
        return new FlowMatchEulerDiscreteScheduler(ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(path));
    }

    /// <summary>The config.</summary>
    public FlowMatchEulerDiscreteSchedulerConfig Config { get; }

    /// <summary>The scheduler order (1: one model evaluation per step).</summary>
    public int Order => 1;

    /// <summary>The shift used by <see cref="SetTimesteps"/> (the config's, unless <see cref="SetShift"/> changed it).</summary>
    public double Shift => _shift;

    /// <summary>The number of inference steps of the last <see cref="SetTimesteps"/>, or null before it.</summary>
    public int? NumInferenceSteps { get; private set; }

    /// <summary>Index of the next step, or null before the first <see cref="Step(Tensor, Tensor, Tensor, Generator?)"/>.</summary>
    public int? StepIndex { get; private set; }

    /// <summary>The first step index set by <see cref="SetBeginIndex"/> (img2img / inpaint), or null.</summary>
    public int? BeginIndex { get; private set; }

    /// <summary>The timesteps (float32, on the device of <see cref="SetTimesteps"/>), owned by the scheduler.</summary>
    public Tensor Timesteps => _timestepsTensor ??= Own(_timesteps);

    /// <summary>The sigmas, one more than the timesteps (the terminal 0, or 1 with <c>invert_sigmas</c>); owned by the scheduler.</summary>
    public Tensor Sigmas => _sigmasTensor ??= Own(_sigmas);

    /// <summary>The timesteps as float32 values.</summary>
    public IReadOnlyList<float> TimestepValues => _timesteps;

    /// <summary>The sigmas as float32 values.</summary>
    public IReadOnlyList<float> SigmaValues => _sigmas;

    /// <summary>
    /// The sigma the default schedule of <see cref="SetTimesteps"/> runs down to (diffusers' <c>sigma_min</c> attribute):
    /// the last training sigma unless set. The Z-Image pipelines set it to 0 (<c>scheduler.sigma_min = 0.0</c>), so their
    /// schedule ends at sigma 0 before the terminal 0.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a finite number.</exception>
    public double SigmaMin
    {
        get => _sigmaMin;
        set
        {
            if (!double.IsFinite(value)) throw new ArgumentOutOfRangeException(nameof(value), value, "sigma_min must be a finite number.");
            _sigmaMin = value;
        }
    }

    /// <summary>The sigma the default schedule starts at (diffusers' <c>sigma_max</c>: the first training sigma).</summary>
    public double SigmaMax => _sigmaMax;

    /// <summary>Changes the static shift used by later <see cref="SetTimesteps"/> calls (diffusers' <c>set_shift</c>).</summary>
    public void SetShift(double shift) => _shift = shift;

    /// <summary>Sets the index of the first step (diffusers' <c>set_begin_index</c>, used by img2img and inpaint).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="beginIndex"/> is negative.</exception>
    public void SetBeginIndex(int beginIndex)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(beginIndex);
        BeginIndex = beginIndex;
    }

    /// <summary>
    /// <c>mu</c> for dynamic shifting from the image token count: linear from (<paramref name="baseSeqLen"/>,
    /// <paramref name="baseShift"/>) to (<paramref name="maxSeqLen"/>, <paramref name="maxShift"/>), as the pipelines'
    /// <c>calculate_shift</c>.
    /// </summary>
    public static double CalculateShift(int imageSeqLen, int baseSeqLen = 256, int maxSeqLen = 4096, double baseShift = 0.5, double maxShift = 1.15)
    {
        if (maxSeqLen == baseSeqLen) throw new ArgumentException("maxSeqLen must differ from baseSeqLen.", nameof(maxSeqLen));
        double m = (maxShift - baseShift) / (maxSeqLen - baseSeqLen);
        double b = baseShift - m * baseSeqLen;
        return imageSeqLen * m + b;
    }

    /// <summary>
    /// Computes the inference schedule (diffusers' <c>set_timesteps</c>): <paramref name="numInferenceSteps"/> timesteps
    /// from sigma_max to sigma_min (float64 linspace), shifted (static shift, or dynamic with <paramref name="mu"/>), then
    /// rounded to float32; or the given <paramref name="sigmas"/> (float32, shifted too). Resets the step and begin index.
    /// </summary>
    /// <param name="numInferenceSteps">Number of steps, at least 1 (must equal the length of <paramref name="sigmas"/> when given).</param>
    /// <param name="device">Device of <see cref="Timesteps"/> and <see cref="Sigmas"/> (CPU when null).</param>
    /// <param name="sigmas">Custom sigmas, one per step, before shifting.</param>
    /// <param name="mu">The dynamic shift; required when <c>use_dynamic_shifting</c> is set.</param>
    /// <param name="timesteps">Custom timesteps, one per step (diffusers' <c>timesteps</c>): kept as given (in float32) for
    /// <see cref="Timesteps"/>; without <paramref name="sigmas"/> the sigmas are <c>timesteps / num_train_timesteps</c> in
    /// float32, shifted. CogView4 passes both.</param>
    public void SetTimesteps(int numInferenceSteps, Device? device = null, float[]? sigmas = null, double? mu = null, float[]? timesteps = null)
    {
        if (numInferenceSteps < 1)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps, "The number of inference steps must be at least 1.");
        if (sigmas is not null && sigmas.Length != numInferenceSteps)
            throw new ArgumentException($"{sigmas.Length} custom sigmas given for {numInferenceSteps} inference steps; they must be equal.", nameof(sigmas));
        if (timesteps is not null && timesteps.Length != numInferenceSteps)
            throw new ArgumentException($"{timesteps.Length} custom timesteps given for {numInferenceSteps} inference steps; they must be equal.", nameof(timesteps));
        if (timesteps is not null && timesteps.Any(t => !float.IsFinite(t)))
            throw new ArgumentException("Custom timesteps must be finite numbers.", nameof(timesteps));
        if (Config.UseDynamicShifting && mu is null)
            throw new ArgumentException("mu must be given when use_dynamic_shifting is set (see CalculateShift).", nameof(mu));
        // diffusers: given timesteps without sigmas become np.float32 timesteps / num_train_timesteps (float32 throughout).
        if (sigmas is null && timesteps is not null)
            sigmas = Array.ConvertAll(timesteps, t => t / (float)Config.NumTrainTimesteps);

        int n = numInferenceSteps;
        // Default path: numpy float64 throughout. Custom sigmas: np.float32 array, so every op stays float32 (NEP 50).
        double[] s64;
        if (sigmas is null)
        {
            double[] ts = Linspace(_sigmaMax * Config.NumTrainTimesteps, _sigmaMin * Config.NumTrainTimesteps, n);
            s64 = new double[n];
            for (int i = 0; i < n; i++)
            {
                double s = ts[i] / Config.NumTrainTimesteps;
                s = ShiftF64(s, mu);
                s64[i] = s;
            }
            if (Config.ShiftTerminal is double st && st != 0.0)
            {
                double scale = (1.0 - s64[^1]) / (1.0 - st);
                for (int i = 0; i < n; i++) s64[i] = 1.0 - (1.0 - s64[i]) / scale;
            }
        }
        else
        {
            var s32 = new float[n];
            for (int i = 0; i < n; i++) s32[i] = ShiftF32(sigmas[i], mu);
            if (Config.ShiftTerminal is double st && st != 0.0)
            {
                float scale = (1f - s32[^1]) / (float)(1.0 - st);
                for (int i = 0; i < n; i++) s32[i] = 1f - (1f - s32[i]) / scale;
            }
            s64 = Array.ConvertAll(s32, v => (double)v);
        }

        if (Config.UseKarrasSigmas) s64 = ToKarras(s64, n);
        else if (Config.UseExponentialSigmas) s64 = ToExponential(s64, n);
        else if (Config.UseBetaSigmas) s64 = ToBeta(s64, n);

        float fT = Config.NumTrainTimesteps;
        var newSigmas = new float[n + 1];
        var newTimesteps = new float[n];
        for (int i = 0; i < n; i++)
        {
            float s = (float)s64[i];
            if (Config.InvertSigmas) s = 1f - s;
            newSigmas[i] = s;
            // Given timesteps are kept, unless the sigmas are inverted (diffusers recomputes them from the sigmas then).
            newTimesteps[i] = timesteps is not null && !Config.InvertSigmas ? timesteps[i] : s * fT;
        }
        newSigmas[n] = Config.InvertSigmas ? 1f : 0f;

        DisposeTensors();
        _device = device ?? CPU;
        _sigmas = newSigmas;
        _timesteps = newTimesteps;
        NumInferenceSteps = n;
        StepIndex = null;
        BeginIndex = null;
    }

    /// <summary>
    /// The index of <paramref name="timestep"/> in <see cref="Timesteps"/>: the second match when it occurs several
    /// times (so a schedule entered midway does not skip a sigma), as diffusers' <c>index_for_timestep</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public int IndexForTimestep(float timestep) => TimestepIndex.Find(_timesteps, timestep, nameof(FlowMatchEulerDiscreteScheduler));

    /// <summary>
    /// One Euler step from <paramref name="timestep"/> to the next sigma: <c>prev = sample.float() + dt * model_output</c>
    /// with <c>dt = sigma[i+1] - sigma[i]</c> (the product runs in the model output's dtype), returned in the model output's
    /// dtype. Advances <see cref="StepIndex"/>.
    /// </summary>
    /// <param name="modelOutput">The model's velocity prediction.</param>
    /// <param name="timestep">The current timestep, one value of <see cref="Timesteps"/> (a floating-point tensor).</param>
    /// <param name="sample">The current latents.</param>
    /// <param name="generator">Noise generator, used only with <c>stochastic_sampling</c>.</param>
    /// <exception cref="ArgumentException">The timestep is an integer tensor, has more than one element, or is not in the schedule.</exception>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    public Tensor Step(Tensor modelOutput, Tensor timestep, Tensor sample, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(timestep);
        if (!timestep.is_floating_point())
            throw new ArgumentException($"Integer timesteps ({timestep.dtype}) are not supported: pass one of scheduler.Timesteps, not a loop index.", nameof(timestep));
        if (timestep.numel() != 1)
            throw new ArgumentException($"Step takes one timestep, got a tensor of shape [{string.Join(",", timestep.shape)}].", nameof(timestep));
        // As diffusers: the timestep's value is read (a device sync on CUDA) only to find the first step's index; the
        // steps after it follow the index.
        return StepAt(modelOutput, sample, generator, () =>
        {
            using var scope = NewDisposeScope();
            return timestep.to(ScalarType.Float32).cpu().item<float>();
        });
    }

    /// <inheritdoc cref="Step(Tensor, Tensor, Tensor, Generator?)"/>
    public Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Generator? generator = null) =>
        StepAt(modelOutput, sample, generator, () => timestep);

    private Tensor StepAt(Tensor modelOutput, Tensor sample, Generator? generator, Func<float> timestep)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        if (NumInferenceSteps is null)
            throw new InvalidOperationException("Call SetTimesteps before Step.");
        StepIndex ??= BeginIndex ?? IndexForTimestep(timestep());
        int i = StepIndex.Value;
        if (i + 1 >= _sigmas.Length)
            throw new InvalidOperationException($"All {NumInferenceSteps} steps are done; call SetTimesteps again.");

        using var scope = NewDisposeScope();
        // The sigmas are 0-dim float32 tensors on the CPU, as diffusers keeps them: a CPU scalar goes into a CUDA kernel as
        // an argument, while a 0-dim tensor made on the GPU is a blocking host-to-device copy, a device sync every step
        // that diffusers does not have (the host can then never run ahead of the GPU).
        var s = sample.to(ScalarType.Float32);
        Tensor prev;
        if (Config.StochasticSampling)
        {
            // x0 = sample - sigma * v; prev = (1 - sigma_next) * x0 + sigma_next * noise (all 0-dim float32 scalars).
            var sigma = tensor(_sigmas[i], ScalarType.Float32);
            var sigmaNext = tensor(_sigmas[i + 1], ScalarType.Float32);
            var x0 = s - sigma * modelOutput;
            var noise = randn(s.shape, ScalarType.Float32, s.device, generator: generator);
            prev = (1.0 - sigmaNext) * x0 + sigmaNext * noise;
        }
        else
        {
            // A 0-dim float32 tensor does not promote model_output, so dt * v runs in the model's dtype.
            var dt = tensor(_sigmas[i + 1] - _sigmas[i], ScalarType.Float32);
            prev = s + dt * modelOutput;
        }
        var result = prev.to(modelOutput.dtype);
        StepIndex = i + 1;
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The flow-matching forward process: <c>sigma * noise + (1 - sigma) * sample</c>, with sigma (in the sample's dtype)
    /// taken at the index of each timestep (before any step, with no begin index), else at <see cref="StepIndex"/>, else
    /// at <see cref="BeginIndex"/>, as diffusers' <c>scale_noise</c>.
    /// </summary>
    /// <param name="sample">Clean latents [B, ...].</param>
    /// <param name="timestep">Timesteps, one per batch element (shape [B]) or a single value.</param>
    /// <param name="noise">Noise of the sample's shape.</param>
    /// <exception cref="ArgumentException">Shapes disagree or a timestep is not in the schedule.</exception>
    public Tensor ScaleNoise(Tensor sample, Tensor timestep, Tensor noise)
    {
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(noise);
        if (!sample.shape.SequenceEqual(noise.shape))
            throw new ArgumentException($"noise shape [{string.Join(",", noise.shape)}] differs from sample shape [{string.Join(",", sample.shape)}].", nameof(noise));
        if (!timestep.is_floating_point())
            throw new ArgumentException($"Integer timesteps ({timestep.dtype}) are not supported: pass values of scheduler.Timesteps.", nameof(timestep));

        using var scope = NewDisposeScope();
        var tvals = timestep.reshape(-1).to(ScalarType.Float32).cpu().data<float>().ToArray();
        var indices = new long[tvals.Length];
        for (int k = 0; k < tvals.Length; k++)
            indices[k] = BeginIndex is null ? IndexForTimestep(tvals[k]) : StepIndex ?? BeginIndex.Value;
        if (indices.Any(ix => ix >= _sigmas.Length))
            throw new InvalidOperationException($"Step index {indices.Max()} is past the end of the schedule ({_sigmas.Length} sigmas).");

        var all = tensor(_sigmas, ScalarType.Float32, sample.device).to(sample.dtype);
        var sigma = all.index_select(0, tensor(indices, ScalarType.Int64, sample.device));
        var shape = new long[sample.dim()];
        Array.Fill(shape, 1L);
        shape[0] = sigma.shape[0];
        sigma = sigma.reshape(shape);
        var result = sigma * noise + (1.0 - sigma) * sample;
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Frees the tensors behind <see cref="Timesteps"/> and <see cref="Sigmas"/>.</summary>
    public void Dispose() => DisposeTensors();

    private void DisposeTensors()
    {
        _timestepsTensor?.Dispose();
        _sigmasTensor?.Dispose();
        _timestepsTensor = null;
        _sigmasTensor = null;
    }

    private Tensor Own(float[] values) => tensor(values, ScalarType.Float32, _device).DetachFromDisposeScope();

    private double ShiftF64(double s, double? mu)
    {
        if (!Config.UseDynamicShifting) return _shift * s / (1.0 + (_shift - 1.0) * s);
        double m = mu!.Value;
        return Config.TimeShiftType == "linear"
            ? m / (m + (1.0 / s - 1.0))
            : Math.Exp(m) / (Math.Exp(m) + (1.0 / s - 1.0));
    }

    private float ShiftF32(float s, double? mu)
    {
        if (!Config.UseDynamicShifting) return (float)_shift * s / (1f + (float)(_shift - 1.0) * s);
        float m = (float)mu!.Value;
        float e = (float)Math.Exp(mu.Value);
        return Config.TimeShiftType == "linear"
            ? m / (m + (1f / s - 1f))
            : e / (e + (1f / s - 1f));
    }

    private static double[] ToKarras(double[] inSigmas, int n)
    {
        const double rho = 7.0;
        double minInvRho = Math.Pow(inSigmas[^1], 1.0 / rho);
        double maxInvRho = Math.Pow(inSigmas[0], 1.0 / rho);
        double[] ramp = Linspace(0.0, 1.0, n);
        var result = new double[n];
        for (int i = 0; i < n; i++) result[i] = Math.Pow(maxInvRho + ramp[i] * (minInvRho - maxInvRho), rho);
        return result;
    }

    private static double[] ToExponential(double[] inSigmas, int n)
    {
        double[] logs = Linspace(Math.Log(inSigmas[0]), Math.Log(inSigmas[^1]), n);
        return Array.ConvertAll(logs, Math.Exp);
    }

    private static double[] ToBeta(double[] inSigmas, int n, double alpha = 0.6, double beta = 0.6)
    {
        double sigmaMin = inSigmas[^1], sigmaMax = inSigmas[0];
        double[] ramp = Linspace(0.0, 1.0, n);
        var result = new double[n];
        for (int i = 0; i < n; i++)
            result[i] = sigmaMin + BetaDistribution.Ppf(1 - ramp[i], alpha, beta) * (sigmaMax - sigmaMin);
        return result;
    }

    /// <summary><c>np.linspace(start, stop, num)</c> in float64 (see <see cref="NumpyMath.Linspace"/>).</summary>
    internal static double[] Linspace(double start, double stop, int num) => NumpyMath.Linspace(start, stop, num);
}
