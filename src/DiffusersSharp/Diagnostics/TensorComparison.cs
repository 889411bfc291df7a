using static TorchSharp.torch;

namespace DiffusersSharp.Diagnostics;

/// <summary>
/// How far an output is from its reference: relative L2 error <c>‖actual − expected‖₂ / ‖expected‖₂</c> (the measure for
/// low-precision runs, where kernels round differently), max |actual − expected|, and the reference's own size.
/// </summary>
/// <param name="Name">What was compared (the fixture key).</param>
/// <param name="Shape">The shape of both tensors.</param>
/// <param name="RelativeL2">‖actual − expected‖₂ / ‖expected‖₂ (0 when both are zero; infinity when only the reference is).</param>
/// <param name="MaxAbsError">max |actual − expected|.</param>
/// <param name="ExpectedMaxAbs">max |expected|.</param>
/// <param name="ExpectedRms">Root mean square of the reference.</param>
public sealed record TensorComparison(string Name, long[] Shape, double RelativeL2, double MaxAbsError, double ExpectedMaxAbs, double ExpectedRms)
{
    /// <summary>Whether the tensors are equal element for element.</summary>
    public bool Exact => MaxAbsError == 0;

    /// <summary>Compares <paramref name="actual"/> with <paramref name="expected"/> in float64 on the CPU.</summary>
    /// <exception cref="ArgumentException">The shapes differ, or a tensor is empty or holds NaN / infinity.</exception>
    public static TensorComparison Of(string name, Tensor actual, Tensor expected)
    {
        ArgumentNullException.ThrowIfNull(actual);
        ArgumentNullException.ThrowIfNull(expected);
        if (!actual.shape.SequenceEqual(expected.shape))
            throw new ArgumentException($"{name}: shape [{string.Join(", ", actual.shape)}] differs from the reference's [{string.Join(", ", expected.shape)}].", nameof(actual));
        if (expected.numel() == 0) throw new ArgumentException($"{name}: the reference is empty.", nameof(expected));
        using var scope = NewDisposeScope();
        var a = actual.detach().cpu().to(ScalarType.Float64);
        var e = expected.detach().cpu().to(ScalarType.Float64);
        if (!a.isfinite().all().item<bool>()) throw new ArgumentException($"{name}: the output holds NaN or infinity.", nameof(actual));
        if (!e.isfinite().all().item<bool>()) throw new ArgumentException($"{name}: the reference holds NaN or infinity.", nameof(expected));
        var diff = a - e;
        double num = diff.square().sum().sqrt().item<double>();
        double den = e.square().sum().sqrt().item<double>();
        double rel = den > 0 ? num / den : num == 0 ? 0 : double.PositiveInfinity;
        return new TensorComparison(name, expected.shape, rel, diff.abs().max().item<double>(), e.abs().max().item<double>(),
            Math.Sqrt(e.square().mean().item<double>()));
    }
}
