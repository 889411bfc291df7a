using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>
/// Exponential moving average of weights (diffusers' <c>EMAModel</c> without power warm-up): after optimizer step
/// <c>n</c> (1-based), <c>decay_n = min(decay, (1 + n) / (10 + n))</c> and <c>ema -= (1 - decay_n)(ema - param)</c>.
/// The shadow weights are float32 copies keyed by parameter name.
/// </summary>
public sealed class ExponentialMovingAverage : IDisposable
{
    private readonly List<(string Name, Parameter Param, Tensor Shadow)> _slots = [];

    /// <summary>Starts the average at the current values of <paramref name="parameters"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="decay"/> is not in [0, 1).</exception>
    public ExponentialMovingAverage(IEnumerable<(string Name, Parameter Param)> parameters, double decay = 0.999)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(decay is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(decay), decay, "EMA decay must be in [0, 1).");
        Decay = decay;
        using var noGrad = no_grad();
        foreach (var (name, p) in parameters)
            _slots.Add((name, p, p.detach().to(ScalarType.Float32).clone().DetachFromDisposeScope()));
    }

    /// <summary>The target decay.</summary>
    public double Decay { get; }

    /// <summary>The decay applied after optimizer step <paramref name="step"/> (1-based).</summary>
    public double DecayAt(long step) => Math.Min(Decay, (1.0 + step) / (10.0 + step));

    /// <summary>Moves the average towards the current weights, for optimizer step <paramref name="step"/> (1-based).</summary>
    public void Update(long step)
    {
        double oneMinus = 1 - DecayAt(step);
        using var noGrad = no_grad();
        foreach (var (_, p, shadow) in _slots)
        {
            using var scope = NewDisposeScope();
            shadow.sub_((shadow - p.to(ScalarType.Float32)).mul_(oneMinus));
        }
    }

    /// <summary>The averaged weights by parameter name (the live shadow tensors; copy to keep).</summary>
    public Dictionary<string, Tensor> Weights() => _slots.ToDictionary(s => s.Name, s => s.Shadow, StringComparer.Ordinal);

    /// <summary>Restores shadow weights saved from <see cref="Weights"/>.</summary>
    /// <exception cref="InvalidDataException">A weight is missing or has another shape.</exception>
    public void Load(IReadOnlyDictionary<string, Tensor> weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        using var noGrad = no_grad();
        foreach (var (name, _, shadow) in _slots)
        {
            if (!weights.TryGetValue(name, out var src))
                throw new InvalidDataException($"EMA state has no '{name}'; the checkpoint was made for another model.");
            if (!src.shape.SequenceEqual(shadow.shape))
                throw new InvalidDataException($"EMA weight '{name}' is [{string.Join(", ", src.shape)}], the parameter [{string.Join(", ", shadow.shape)}].");
            shadow.copy_(src);
        }
    }

    /// <summary>Frees the shadow weights.</summary>
    public void Dispose()
    {
        foreach (var (_, _, s) in _slots) s.Dispose();
        _slots.Clear();
    }
}
