namespace DiffusersSharp.Schedulers;

/// <summary>
/// The <c>set_timesteps</c> schedule shared by diffusers' multistep solvers (DPM-Solver++, UniPC, DEIS): int64 timesteps
/// by spacing, then sigmas interpolated from the training sigmas, or Karras / exponential / beta / Lu sigmas with the
/// timesteps recovered by <c>_sigma_to_t</c>, then the final sigma. numpy's float64 order, float32 results.
/// </summary>
internal static class MultistepSchedule
{
    /// <summary>The options that decide a schedule.</summary>
    internal sealed record Options
    {
        public required string Spacing { get; init; }
        public int StepsOffset { get; init; }
        /// <summary>The timestep range's end (num_train_timesteps less DPM's lambda_min_clipped cut).</summary>
        public required long LastTimestep { get; init; }
        public bool Karras { get; init; }
        public bool Exponential { get; init; }
        public bool Beta { get; init; }
        public bool LuLambdas { get; init; }
        public double? SigmaMin { get; init; }
        public double? SigmaMax { get; init; }
        public required string FinalSigmasType { get; init; }
        /// <summary>Round the Karras / Lu timesteps (DPM: not for squaredcos_cap_v2; UniPC / DEIS: always Karras only).</summary>
        public bool RoundConverted { get; init; } = true;
        /// <summary>With a value: DPM-Solver's flow sigmas (<c>use_flow_sigmas</c>) shifted by it; the spacing's timesteps are
        /// then replaced by sigma * num_train_timesteps.</summary>
        public double? FlowShift { get; init; }
        /// <summary>"sigma_min" with converted sigmas takes their last value (UniPC, DEIS) rather than the training minimum (DPM).</summary>
        public bool FinalFromConverted { get; init; }
    }

    /// <summary>Timesteps (whole numbers as float32) and sigmas (one more, the final sigma last).</summary>
    public static (float[] Timesteps, float[] Sigmas) Compute(int n, int numTrain, float[] alphasCumprod, Options o)
    {
        long last = o.LastTimestep;
        double[] ts = o.Spacing switch
        {
            "linspace" => Reversed(Array.ConvertAll(NumpyMath.Linspace(0, last - 1, n + 1), NumpyMath.Round))[..n],
            "leading" => Reversed(Enumerable.Range(0, n + 1).Select(i => (double)(i * (last / (n + 1)))).ToArray())[..n]
                .Select(v => v + o.StepsOffset).ToArray(),
            "trailing" => Array.ConvertAll(NumpyMath.Arange(last, 0, -((double)numTrain / n)), v => NumpyMath.Round(v) - 1),
            _ => throw new ArgumentException($"timestep_spacing \"{o.Spacing}\" is not supported; use linspace, leading or trailing."),
        };

        float[] train = Array.ConvertAll(alphasCumprod, a => MathF.Sqrt((1f - a) / a));
        float[] logSigmas = NumpyMath.LogF32(train);
        double[] sigmas;
        bool converted = o.Karras || o.Exponential || o.Beta;
        if (converted)
        {
            // in_sigmas = np.flip(sigmas): the ends are the largest and the smallest training sigma.
            double min = o.SigmaMin ?? train[0], max = o.SigmaMax ?? train[^1];
            sigmas = o.Karras ? NumpyMath.Karras(min, max, n) : o.Exponential ? NumpyMath.Exponential(min, max, n) : NumpyMath.Beta(min, max, n);
            ts = Array.ConvertAll(sigmas, s => NumpyMath.SigmaToT(s, logSigmas));
            if (o.Karras && o.RoundConverted) ts = Array.ConvertAll(ts, NumpyMath.Round);
        }
        else if (o.FlowShift is double shift)
        {
            // alphas = linspace(1, 1 / T, n + 1); sigmas = 1 - alphas, shifted, flipped, the last (0) dropped; float64.
            double[] alphas = NumpyMath.Linspace(1, 1.0 / numTrain, n + 1);
            sigmas = new double[n];
            ts = new double[n];
            for (int i = 0; i < n; i++)
            {
                double s = 1.0 - alphas[n - i];
                sigmas[i] = shift * s / (1 + (shift - 1) * s);
                ts[i] = sigmas[i] * numTrain;
            }
        }
        else if (o.LuLambdas)
        {
            double lambdaMin = logSigmas[0], lambdaMax = logSigmas[^1];
            double[] ramp = NumpyMath.Linspace(0, 1, n);
            sigmas = new double[n];
            for (int i = 0; i < n; i++) sigmas[i] = Math.Exp(lambdaMax + ramp[i] * (lambdaMin - lambdaMax));
            ts = Array.ConvertAll(sigmas, s => NumpyMath.SigmaToT(s, logSigmas));
            if (o.RoundConverted) ts = Array.ConvertAll(ts, NumpyMath.Round);
        }
        else
        {
            sigmas = Array.ConvertAll(ts, x => NumpyMath.Interp(x, train));
        }

        float final = o.FinalSigmasType switch
        {
            "zero" => 0f,
            "sigma_min" => converted && o.FinalFromConverted ? (float)sigmas[^1] : train[0],
            _ => throw new ArgumentException($"final_sigmas_type must be one of zero, sigma_min, got \"{o.FinalSigmasType}\"."),
        };
        var sigmas32 = new float[sigmas.Length + 1];
        for (int i = 0; i < sigmas.Length; i++) sigmas32[i] = (float)sigmas[i];
        sigmas32[^1] = final;
        // .astype(np.int64) / .to(torch.int64) truncate toward zero.
        return (Array.ConvertAll(ts, v => (float)(long)v), sigmas32);
    }

    /// <summary>DPM-Solver's <c>torch.searchsorted(torch.flip(lambda_t), lambda_min_clipped)</c>, lambda_t =
    /// log(alpha_t) - log(sigma_t) in torch float32: how many of the noisiest training timesteps the schedule drops.</summary>
    public static int ClippedIndex(IReadOnlyList<float> alphasCumprod, double lambdaMinClipped)
    {
        if (double.IsNegativeInfinity(lambdaMinClipped)) return 0;
        using var scope = TorchSharp.torch.NewDisposeScope();
        var ac = TorchSharp.torch.tensor(alphasCumprod.ToArray(), TorchSharp.torch.ScalarType.Float32);
        var lambda = ac.sqrt().log() - (1 - ac).sqrt().log();
        var flipped = lambda.flip(0).data<float>().ToArray();
        int idx = 0;
        while (idx < flipped.Length && flipped[idx] < lambdaMinClipped) idx++;
        return idx;
    }

    private static double[] Reversed(double[] values)
    {
        Array.Reverse(values);
        return values;
    }
}
