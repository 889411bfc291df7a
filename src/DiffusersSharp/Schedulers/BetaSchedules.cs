using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// The training noise schedule of the DDPM-family schedulers: betas (linear, scaled_linear, squaredcos_cap_v2 or
/// trained), optionally rescaled to zero terminal SNR, and their cumulative alpha product. The torch parts run through
/// libtorch on the CPU with diffusers' own ops (float32 linspace, <c>** 2</c>, <c>cumprod</c>), so the values are
/// libtorch's bits rather than a re-derivation of them.
/// </summary>
internal static class BetaSchedules
{
    /// <summary>The beta schedule names diffusers accepts.</summary>
    public static readonly string[] Known = { "linear", "scaled_linear", "squaredcos_cap_v2" };

    /// <summary>
    /// <c>alphas_cumprod</c> as float32. <paramref name="zeroSnrLast"/> replaces the last value by 2^-24 after a
    /// zero-SNR rescale, as the Euler / DPM schedulers do (DDIM does not).
    /// </summary>
    /// <exception cref="ArgumentException">Unknown schedule, or trained betas of the wrong length.</exception>
    public static float[] AlphasCumprod(BetaScheduleConfig config, bool rescaleZeroSnr, bool zeroSnrLast, string owner)
    {
        int t = config.NumTrainTimesteps;
        if (t < 2) throw new ArgumentException($"{owner}: num_train_timesteps must be at least 2, got {t}.");
        using var scope = NewDisposeScope();
        Tensor betas;
        if (config.TrainedBetas is { } trained)
        {
            if (trained.Length != t)
                throw new ArgumentException($"{owner}: trained_betas has {trained.Length} values for num_train_timesteps {t}.");
            betas = tensor(Array.ConvertAll(trained, b => (float)b), ScalarType.Float32);
        }
        else
        {
            betas = config.BetaSchedule switch
            {
                "linear" => linspace(config.BetaStart, config.BetaEnd, t, ScalarType.Float32),
                "scaled_linear" => linspace(Math.Pow(config.BetaStart, 0.5), Math.Pow(config.BetaEnd, 0.5), t, ScalarType.Float32).pow(2),
                "squaredcos_cap_v2" => tensor(CosineBetas(t), ScalarType.Float32),
                _ => throw new ArgumentException(
                    $"{owner}: beta_schedule \"{config.BetaSchedule}\" is not implemented; use one of {string.Join(", ", Known)} or trained_betas."),
            };
        }
        if (rescaleZeroSnr) betas = RescaleZeroTerminalSnr(betas);
        var alphas = 1.0 - betas;
        var cumprod = alphas.cumprod(0);
        var result = cumprod.data<float>().ToArray();
        if (rescaleZeroSnr && zeroSnrLast) result[^1] = MathF.Pow(2, -24);
        return result;
    }

    /// <summary>
    /// <c>betas_for_alpha_bar</c> with the cosine transform: <c>min(1 - a(t2) / a(t1), 0.999)</c> in float64 (then
    /// float32 by the caller's <c>torch.tensor</c>).
    /// </summary>
    private static float[] CosineBetas(int n, double maxBeta = 0.999)
    {
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        var betas = new float[n];
        for (int i = 0; i < n; i++)
        {
            double t1 = i / (double)n, t2 = (i + 1) / (double)n;
            betas[i] = (float)Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), maxBeta);
        }
        return betas;
    }

    /// <summary>Lin et al. (2023): shifts sqrt(alphas_cumprod) so the last is 0 and the first unchanged (torch float32 ops).</summary>
    private static Tensor RescaleZeroTerminalSnr(Tensor betas)
    {
        var alphas = 1.0 - betas;
        var alphasCumprod = alphas.cumprod(0);
        var sqrt = alphasCumprod.sqrt();
        long n = sqrt.shape[0];
        var first = sqrt[0].clone();
        var last = sqrt[n - 1].clone();
        sqrt.sub_(last);
        sqrt.mul_(first / (first - last));
        var bar = sqrt.pow(2);
        var ratios = bar.narrow(0, 1, n - 1) / bar.narrow(0, 0, n - 1);
        var rescaled = cat(new[] { bar.narrow(0, 0, 1), ratios });
        return 1 - rescaled;
    }
}
