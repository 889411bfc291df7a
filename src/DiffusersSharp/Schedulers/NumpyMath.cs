namespace DiffusersSharp.Schedulers;

/// <summary>
/// The numpy float64 pieces of diffusers' schedules (linspace, arange with a float step, interp, round, the sigma
/// conversions), written in numpy's operation order so the float64 results are the same bits.
/// </summary>
internal static class NumpyMath
{
    /// <summary><c>np.linspace(start, stop, num)</c> in float64: <c>i * step + start</c>, the last value set to <c>stop</c>.</summary>
    public static double[] Linspace(double start, double stop, int num)
    {
        var y = new double[num];
        if (num == 1) { y[0] = start; return y; }
        int div = num - 1;
        double delta = stop - start;
        double step = delta / div;
        for (int i = 0; i < num; i++)
            y[i] = step == 0 ? i / (double)div * delta + start : i * step + start;
        y[num - 1] = stop;
        return y;
    }

    /// <summary>
    /// <c>np.arange(start, stop, step)</c> for a float step: length <c>ceil((stop - start) / step)</c>, values
    /// <c>start</c>, <c>start + step</c>, then <c>start + i * delta</c> with <c>delta = (start + step) - start</c>
    /// (numpy's fill).
    /// </summary>
    public static double[] Arange(double start, double stop, double step)
    {
        double len = Math.Ceiling((stop - start) / step);
        int n = len > 0 ? (int)len : 0;
        var y = new double[n];
        if (n == 0) return y;
        y[0] = start;
        if (n == 1) return y;
        y[1] = start + step;
        double delta = y[1] - y[0];
        for (int i = 2; i < n; i++) y[i] = start + i * delta;
        return y;
    }

    /// <summary><c>np.round</c>: half to even.</summary>
    public static double Round(double x) => Math.Round(x, MidpointRounding.ToEven);

    /// <summary>
    /// <c>np.interp(x, np.arange(len(fp)), fp)</c> with float32 <paramref name="fp"/>: <c>slope * (x - xp[j]) + fp[j]</c>
    /// in float64, the end values outside the range and at exact grid points.
    /// </summary>
    public static double Interp(double x, float[] fp)
    {
        int n = fp.Length;
        if (double.IsNaN(x)) return x;
        if (x < 0) return fp[0];
        if (x > n - 1) return fp[n - 1];
        int j = (int)Math.Floor(x);
        if (j == n - 1 || j == x) return fp[j];
        double slope = ((double)fp[j + 1] - fp[j]) / ((double)(j + 1) - j);
        double r = slope * (x - j) + fp[j];
        if (double.IsNaN(r))
        {
            r = slope * (x - (j + 1)) + fp[j + 1];
            if (double.IsNaN(r) && fp[j] == fp[j + 1]) r = fp[j];
        }
        return r;
    }

    /// <summary>
    /// diffusers' <c>_sigma_to_t</c>: the fractional training timestep of <paramref name="sigma"/> by linear
    /// interpolation in log-sigma. <paramref name="logSigmas"/> is numpy's float32 <c>np.log(sigmas)</c>, so
    /// <c>low - high</c> is a float32 difference while <c>low - log_sigma</c> is float64.
    /// </summary>
    public static double SigmaToT(double sigma, float[] logSigmas)
    {
        double logSigma = Math.Log(Math.Max(sigma, 1e-10));
        // np.cumsum(dists >= 0).argmax(): the first index where the running count reaches its maximum.
        int count = 0, best = -1, lowIdx = 0;
        for (int i = 0; i < logSigmas.Length; i++)
        {
            if (logSigma - logSigmas[i] >= 0) count++;
            if (count > best) { best = count; lowIdx = i; }
        }
        lowIdx = Math.Min(lowIdx, logSigmas.Length - 2);
        int highIdx = lowIdx + 1;
        float low = logSigmas[lowIdx], high = logSigmas[highIdx];
        double w = (low - logSigma) / (double)(low - high);
        w = Math.Clamp(w, 0.0, 1.0);
        return (1 - w) * lowIdx + w * highIdx;
    }

    /// <summary>
    /// <c>_sigma_to_t</c> when diffusers hands it torch float32 tensors (KDPM2's interpolated sigmas against
    /// <c>self.log_sigmas</c>): numpy's ufuncs return tensors there, so every step, the log included, is float32.
    /// </summary>
    public static float SigmaToTFloat32(float sigma, float[] logSigmas)
    {
        float logSigma = (float)Math.Log(Math.Max(sigma, 1e-10f));
        int count = 0, best = -1, lowIdx = 0;
        for (int i = 0; i < logSigmas.Length; i++)
        {
            if (logSigma - logSigmas[i] >= 0) count++;
            if (count > best) { best = count; lowIdx = i; }
        }
        lowIdx = Math.Min(lowIdx, logSigmas.Length - 2);
        int highIdx = lowIdx + 1;
        float low = logSigmas[lowIdx], high = logSigmas[highIdx];
        float w = Math.Clamp((low - logSigma) / (low - high), 0f, 1f);
        return (1 - w) * lowIdx + w * highIdx;
    }

    /// <summary>numpy's float32 <c>np.log</c> of each value (correctly rounded here; numpy's SIMD log may differ by an ulp).</summary>
    public static float[] LogF32(float[] values) => Array.ConvertAll(values, v => (float)Math.Log(v));

    /// <summary>Karras et al. (2022) sigmas, rho 7, in float64.</summary>
    public static double[] Karras(double sigmaMin, double sigmaMax, int n)
    {
        const double rho = 7.0;
        double[] ramp = Linspace(0, 1, n);
        double minInvRho = Math.Pow(sigmaMin, 1 / rho);
        double maxInvRho = Math.Pow(sigmaMax, 1 / rho);
        var s = new double[n];
        for (int i = 0; i < n; i++) s[i] = Math.Pow(maxInvRho + ramp[i] * (minInvRho - maxInvRho), rho);
        return s;
    }

    /// <summary>Log-linear sigmas from <paramref name="sigmaMax"/> to <paramref name="sigmaMin"/>.</summary>
    public static double[] Exponential(double sigmaMin, double sigmaMax, int n) =>
        Array.ConvertAll(Linspace(Math.Log(sigmaMax), Math.Log(sigmaMin), n), Math.Exp);

    /// <summary>Beta(0.6, 0.6) quantile sigmas (diffusers' <c>_convert_to_beta</c>).</summary>
    public static double[] Beta(double sigmaMin, double sigmaMax, int n, double alpha = 0.6, double beta = 0.6)
    {
        double[] ramp = Linspace(0, 1, n);
        var s = new double[n];
        for (int i = 0; i < n; i++) s[i] = sigmaMin + BetaDistribution.Ppf(1 - ramp[i], alpha, beta) * (sigmaMax - sigmaMin);
        return s;
    }
}
