using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// FreeU (Si et al. 2023; diffusers' <c>enable_freeu(s1, s2, b1, b2)</c>, <c>apply_freeu</c> and <c>fourier_filter</c>):
/// in the UNet's first two up blocks (the lowest resolutions), every resnet's input has its first half of channels
/// amplified by b1 / b2 (backbone features) and the skip features it is concatenated with damped at their lowest spatial
/// frequencies by s1 / s2 (a 2 x 2 window around the centre of the shifted 2-D FFT).
/// </summary>
/// <param name="S1">Stage 1 (up block 0) skip-feature scale.</param>
/// <param name="S2">Stage 2 (up block 1) skip-feature scale.</param>
/// <param name="B1">Stage 1 backbone-feature scale.</param>
/// <param name="B2">Stage 2 backbone-feature scale.</param>
/// <remarks>
/// As diffusers' <c>is_freeu_enabled</c> tests the four values for truthiness, FreeU with any of them 0 does nothing.
/// The FFT runs in float32 for bfloat16 features, for sizes that are not powers of two (as diffusers), and for float16 on
/// the CPU (libtorch has no half-precision CPU FFT).
/// </remarks>
public sealed record FreeU(double S1, double S2, double B1, double B2)
{
    /// <summary>Whether diffusers would apply it: every value nonzero.</summary>
    public bool IsEnabled => S1 != 0 && S2 != 0 && B1 != 0 && B2 != 0;

    /// <summary>
    /// diffusers' <c>apply_freeu</c> for the up block at <paramref name="resolutionIdx"/>: the hidden states and skip
    /// features as they go into the concatenation (unchanged past the second block or when not enabled).
    /// </summary>
    public (Tensor Hidden, Tensor Residual) Apply(int resolutionIdx, Tensor hidden, Tensor residual)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(residual);
        if (!IsEnabled || resolutionIdx is not (0 or 1)) return (hidden, residual);
        double b = resolutionIdx == 0 ? B1 : B2, s = resolutionIdx == 0 ? S1 : S2;
        long channels = hidden.shape[1], half = channels / 2;
        var amplified = cat([hidden.narrow(1, 0, half) * b, hidden.narrow(1, half, channels - half)], 1);
        return (amplified, FourierFilter(residual, threshold: 1, s));
    }

    /// <summary>
    /// An up block's input to one resnet: <paramref name="hidden"/> and the skip state <paramref name="residual"/>
    /// concatenated on channels, after <paramref name="freeU"/> when it is on (null: off). FreeU's intermediates are freed here.
    /// </summary>
    internal static Tensor ConcatSkip(FreeU? freeU, int resolutionIdx, Tensor hidden, Tensor residual)
    {
        using var scope = NewDisposeScope();
        var (h, r) = freeU is null ? (hidden, residual) : freeU.Apply(resolutionIdx, hidden, residual);
        return cat([h, r], 1).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>fourier_filter</c>: the [B, C, H, W] features with the FFT window of half-width
    /// <paramref name="threshold"/> around the centre (Python slice bounds) multiplied by <paramref name="scale"/>.</summary>
    internal static Tensor FourierFilter(Tensor input, int threshold, double scale)
    {
        using var scope = NewDisposeScope();
        long h = input.shape[2], w = input.shape[3];
        bool powersOfTwo = (w & (w - 1)) == 0 && (h & (h - 1)) == 0;
        var x = !powersOfTwo || input.dtype == ScalarType.BFloat16 || (input.dtype == ScalarType.Float16 && input.device_type == TorchSharp.DeviceType.CPU)
            ? input.to(ScalarType.Float32) : input;
        long[] dims = [-2, -1];
        var freq = fft.fftshift(fft.fftn(x, dim: dims), dims);
        var mask = ones(freq.shape, ScalarType.Float32, x.device);
        var (rowStart, rowEnd) = PythonSlice(h / 2 - threshold, h / 2 + threshold, h);
        var (colStart, colEnd) = PythonSlice(w / 2 - threshold, w / 2 + threshold, w);
        if (rowEnd > rowStart && colEnd > colStart)
            mask.narrow(2, rowStart, rowEnd - rowStart).narrow(3, colStart, colEnd - colStart).fill_(scale);
        var filtered = fft.ifftn(fft.ifftshift(freq * mask, dims), dim: dims).real;
        return filtered.to(input.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The [start, end) a Python slice <c>[start:end]</c> selects on an axis of <paramref name="length"/>.</summary>
    private static (long Start, long End) PythonSlice(long start, long end, long length)
    {
        static long Bound(long i, long n) => Math.Clamp(i < 0 ? i + n : i, 0, n);
        return (Bound(start, length), Bound(end, length));
    }
}
