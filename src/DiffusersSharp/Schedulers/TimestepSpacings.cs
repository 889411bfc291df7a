namespace DiffusersSharp.Schedulers;

/// <summary>
/// The inference timesteps of the "linspace", "leading" and "trailing" spacings (Lin et al. 2023, table 2), descending,
/// in numpy's order of operations and dtypes for the schedulers that share them.
/// </summary>
internal static class TimestepSpacings
{
    /// <summary>The spacing names.</summary>
    public static readonly string[] Known = { "linspace", "leading", "trailing" };

    /// <summary>Euler / Euler ancestral / LMS: float32 timesteps (the "leading" offset and the "trailing" -1 in float32).</summary>
    public static float[] Float32(string spacing, int numTrain, int n, int stepsOffset)
    {
        var result = new float[n];
        switch (spacing)
        {
            case "linspace":
            {
                var lin = NumpyMath.Linspace(0, numTrain - 1, n);
                for (int i = 0; i < n; i++) result[i] = (float)lin[n - 1 - i];
                return result;
            }
            case "leading":
            {
                long ratio = numTrain / n;
                for (int i = 0; i < n; i++) result[i] = (float)((n - 1 - i) * ratio) + stepsOffset;
                return result;
            }
            case "trailing":
            {
                var ar = NumpyMath.Arange(numTrain, 0, -((double)numTrain / n));
                result = new float[ar.Length];
                for (int i = 0; i < ar.Length; i++) result[i] = (float)NumpyMath.Round(ar[i]) - 1f;
                return result;
            }
            default:
                throw new ArgumentException($"timestep_spacing \"{spacing}\" is not supported; use one of {string.Join(", ", Known)}.");
        }
    }

    /// <summary>DDIM: int64 timesteps, descending.</summary>
    public static long[] Int64(string spacing, int numTrain, int n, int stepsOffset)
    {
        switch (spacing)
        {
            case "linspace":
            {
                var lin = NumpyMath.Linspace(0, numTrain - 1, n);
                var r = new long[n];
                for (int i = 0; i < n; i++) r[i] = (long)NumpyMath.Round(lin[n - 1 - i]);
                return r;
            }
            case "leading":
            {
                long ratio = numTrain / n;
                var r = new long[n];
                for (int i = 0; i < n; i++) r[i] = (n - 1 - i) * ratio + stepsOffset;
                return r;
            }
            case "trailing":
            {
                var ar = NumpyMath.Arange(numTrain, 0, -((double)numTrain / n));
                return Array.ConvertAll(ar, v => (long)NumpyMath.Round(v) - 1);
            }
            default:
                throw new ArgumentException($"timestep_spacing \"{spacing}\" is not supported; use one of {string.Join(", ", Known)}.");
        }
    }
}
