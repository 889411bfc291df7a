using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>Hyper-parameters of <see cref="AdamW"/> (PyTorch's defaults except the learning rate).</summary>
public sealed record AdamWOptions
{
    /// <summary>Learning rate.</summary>
    public double LearningRate { get; init; } = 1e-4;

    /// <summary>beta1.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>beta2.</summary>
    public double Beta2 { get; init; } = 0.999;

    /// <summary>eps.</summary>
    public double Eps { get; init; } = 1e-8;

    /// <summary>Decoupled weight decay.</summary>
    public double WeightDecay { get; init; } = 1e-2;
}

/// <summary>
/// AdamW with named state: the update of <c>torch.optim.AdamW</c> (single-tensor path: decay, lerp of the first
/// moment, second moment, bias corrections, <c>addcdiv</c>), but its moments are keyed by parameter name so that a
/// checkpoint is a plain safetensors file that resumes into freshly built models. TorchSharp's own optimizer keeps its
/// state by parameter order in a private binary format.
/// </summary>
public sealed class AdamW : IDisposable
{
    private readonly List<(string Name, Parameter Param, Tensor ExpAvg, Tensor ExpAvgSq)> _slots = [];

    /// <summary>Creates the optimizer over <paramref name="parameters"/> (name, parameter); moments start at zero.</summary>
    /// <exception cref="ArgumentException">A name repeats or the options are out of range.</exception>
    public AdamW(IEnumerable<(string Name, Parameter Param)> parameters, AdamWOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Options = options ?? new AdamWOptions();
        if (!(Options.LearningRate >= 0)) throw new ArgumentException($"learning rate must be >= 0, got {Options.LearningRate}.", nameof(options));
        if (!(Options.Beta1 is >= 0 and < 1) || !(Options.Beta2 is >= 0 and < 1))
            throw new ArgumentException($"betas must be in [0, 1), got ({Options.Beta1}, {Options.Beta2}).", nameof(options));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, p) in parameters)
        {
            if (!seen.Add(name)) throw new ArgumentException($"parameter name '{name}' occurs twice.", nameof(parameters));
            var m = zeros_like(p).DetachFromDisposeScope();
            var v = zeros_like(p).DetachFromDisposeScope();
            _slots.Add((name, p, m, v));
        }
    }

    /// <summary>The hyper-parameters.</summary>
    public AdamWOptions Options { get; }

    /// <summary>Steps taken (the bias-correction count).</summary>
    public long StepCount { get; private set; }

    /// <summary>The learning rate of the next step (a schedule may change it).</summary>
    public double LearningRate { get; set; } = double.NaN;

    /// <summary>Clears every gradient.</summary>
    public void ZeroGrad()
    {
        foreach (var slot in _slots)
        {
            var g = slot.Param.grad;
            if (g is not null) { g.Dispose(); slot.Param.grad = null; }
        }
    }

    /// <summary>One update of every parameter that has a gradient.</summary>
    public void Step()
    {
        StepCount++;
        double lr = double.IsNaN(LearningRate) ? Options.LearningRate : LearningRate;
        double b1 = Options.Beta1, b2 = Options.Beta2;
        double bc1 = 1 - Math.Pow(b1, StepCount), bc2Sqrt = Math.Sqrt(1 - Math.Pow(b2, StepCount));
        double stepSize = lr / bc1;
        using var noGrad = no_grad();
        foreach (var (_, p, m, v) in _slots)
        {
            using var scope = NewDisposeScope();
            var g = p.grad;
            if (g is null) continue;
            p.mul_(1 - lr * Options.WeightDecay);
            m.lerp_(g, 1 - b1);
            v.mul_(b2).addcmul_(g, g, 1 - b2);
            var denom = (v.sqrt() / bc2Sqrt).add_(Options.Eps);
            p.addcdiv_(m, denom, -stepSize);
        }
    }

    /// <summary>The state as tensors: <c>exp_avg.NAME</c>, <c>exp_avg_sq.NAME</c> (views of the live state; copy to keep).</summary>
    public Dictionary<string, Tensor> StateTensors()
    {
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, _, m, v) in _slots)
        {
            state["exp_avg." + name] = m;
            state["exp_avg_sq." + name] = v;
        }
        return state;
    }

    /// <summary>Restores the state saved by <see cref="StateTensors"/> and the step count.</summary>
    /// <exception cref="InvalidDataException">A moment is missing or has another shape.</exception>
    public void LoadState(IReadOnlyDictionary<string, Tensor> state, long stepCount)
    {
        ArgumentNullException.ThrowIfNull(state);
        using var noGrad = no_grad();
        foreach (var (name, _, m, v) in _slots)
            foreach (var (key, dst) in new[] { ("exp_avg." + name, m), ("exp_avg_sq." + name, v) })
            {
                if (!state.TryGetValue(key, out var src))
                    throw new InvalidDataException($"optimizer state has no '{key}'; the checkpoint was made for another model.");
                if (!src.shape.SequenceEqual(dst.shape))
                    throw new InvalidDataException($"optimizer state '{key}' is [{string.Join(", ", src.shape)}], the parameter [{string.Join(", ", dst.shape)}].");
                dst.copy_(src);
            }
        StepCount = stepCount;
    }

    /// <summary>Frees the moments.</summary>
    public void Dispose()
    {
        foreach (var (_, _, m, v) in _slots)
        {
            m.Dispose();
            v.Dispose();
        }
        _slots.Clear();
    }
}
