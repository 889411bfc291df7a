using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>Comparisons of tensors against fixtures, reporting the error actually measured.</summary>
public static class TensorAssert
{
    /// <summary>Max absolute difference, computed in float64.</summary>
    public static double MaxAbsDiff(Tensor actual, Tensor expected)
    {
        using var a = actual.detach().cpu().to(ScalarType.Float64);
        using var e = expected.detach().cpu().to(ScalarType.Float64);
        using var d = (a - e).abs().max();
        return d.item<double>();
    }

    /// <summary>Relative L2 error ‖actual − expected‖ / ‖expected‖, computed in float64 (the half-precision sanity measure).</summary>
    public static double RelativeL2(Tensor actual, Tensor expected)
    {
        using var a = actual.detach().cpu().to(ScalarType.Float64);
        using var e = expected.detach().cpu().to(ScalarType.Float64);
        using var num = (a - e).norm();
        using var den = e.norm();
        return num.item<double>() / den.item<double>();
    }

    /// <summary>
    /// Asserts equal shapes and max |actual - expected| &lt;= <paramref name="tolerance"/> * max(1, max |expected|)
    /// (the fixtures README's component tolerance is 1e-4). Returns the measured max error.
    /// </summary>
    public static double Close(Tensor actual, Tensor expected, double tolerance = 1e-4, string what = "tensor")
    {
        Assert.Equal(expected.shape, actual.shape);
        using var e = expected.detach().cpu().to(ScalarType.Float64);
        using var m = e.abs().max();
        double scale = Math.Max(1.0, m.item<double>());
        double err = MaxAbsDiff(actual, expected);
        Assert.True(err <= tolerance * scale, $"{what}: max |diff| = {err:G4} exceeds {tolerance:G2} x {scale:G4}");
        return err;
    }
}
