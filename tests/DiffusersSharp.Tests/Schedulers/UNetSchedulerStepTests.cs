using Generator = DiffusersSharp.Runtime.Generator;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Schedulers;

/// <summary>
/// Step math on the exact noise path: a model that returns the true noise (or x0) must keep every scheduler on
/// <c>x_t = x0 + sigma_t * eps</c> (DDPM form: <c>sqrt(a) x0 + sqrt(1 - a) eps</c>) up to float32 rounding.
/// </summary>
public class UNetSchedulerStepTests
{
    private static readonly long[] Shape = { 1, 4, 8, 8 };

    private static (Tensor X0, Tensor Eps) Pair(long seed)
    {
        using var g = new Generator().ManualSeed(seed);
        var x0 = g.Randn(Shape, ScalarType.Float32, CPU) * 0.5;
        var eps = g.Randn(Shape, ScalarType.Float32, CPU);
        return (x0, eps);
    }

    private static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Fact]
    public void DdimWithEtaZeroAndTheTrueNoiseRecoversX0()
    {
        var (x0, eps) = Pair(1);
        using var s = new DDIMScheduler(new DDIMSchedulerConfig
        {
            BetaSchedule = "scaled_linear", BetaStart = 0.00085, BetaEnd = 0.012, StepsOffset = 1, ClipSample = false,
        });
        s.SetTimesteps(10);
        var x = s.AddNoise(x0, eps, s.TimestepValues[0]);
        foreach (float t in s.TimestepValues)
        {
            var next = s.Step(eps, t, x);
            x.Dispose();
            x = next;
        }
        // set_alpha_to_one: the last step lands on x0 itself.
        Assert.True(MaxDiff(x, x0) < 2e-5, $"max |x - x0| = {MaxDiff(x, x0)}");
    }

    [Fact]
    public void DdimClipsThePredictedSampleAndUsesEtaNoise()
    {
        var (x0, eps) = Pair(2);
        using var s = new DDIMScheduler(new DDIMSchedulerConfig { ClipSample = true, ClipSampleRange = 0.1 });
        s.SetTimesteps(5);
        var x = s.AddNoise(x0, eps, s.TimestepValues[^1]);
        var prev = s.Step(eps, s.TimestepValues[^1], x);
        // last step with alpha_prev = 1: the result is the clipped x0.
        Assert.True(MaxDiff(prev, x0.clamp(-0.1, 0.1)) < 1e-5);

        using var g1 = new Generator().ManualSeed(7);
        using var g2 = new Generator().ManualSeed(7);
        var a = s.Step(eps, s.TimestepValues[1], x, eta: 1.0, generator: g1);
        var b = s.Step(eps, s.TimestepValues[1], x, eta: 1.0, generator: g2);
        var deterministic = s.Step(eps, s.TimestepValues[1], x);
        Assert.Equal(0.0, MaxDiff(a, b));
        Assert.True(MaxDiff(a, deterministic) > 1e-3);
    }

    [Fact]
    public void PlmsWithTheTrueNoiseStaysOnThePath()
    {
        var (x0, eps) = Pair(3);
        using var s = (PNDMScheduler)DiffusionSchedulers.FromConfig(UNetSchedulerScheduleTests.CaseConfig("pndm"));
        s.SetTimesteps(10);
        var x = s.AddNoise(x0, eps, s.TimestepValues[0]);
        foreach (float t in s.TimestepValues)
        {
            var next = s.Step(eps, t, x);
            x.Dispose();
            x = next;
        }
        Assert.Equal(11, s.Counter);
        // The last step goes to alphas_cumprod[0] (set_alpha_to_one false).
        float a0 = s.AlphasCumprod[0];
        var expected = x0 * MathF.Sqrt(a0) + eps * MathF.Sqrt(1 - a0);
        Assert.True(MaxDiff(x, expected) < 2e-5, $"max diff {MaxDiff(x, expected)}");
    }

    [Fact]
    public void PrkWarmUpWithTheTrueNoiseStaysOnThePath()
    {
        var (x0, eps) = Pair(4);
        using var s = new PNDMScheduler(new PNDMSchedulerConfig { BetaSchedule = "scaled_linear", BetaStart = 0.00085, BetaEnd = 0.012, StepsOffset = 1 });
        s.SetTimesteps(10);
        var x = s.AddNoise(x0, eps, s.TimestepValues[0]);
        foreach (float t in s.TimestepValues)
        {
            var next = s.Step(eps, t, x);
            x.Dispose();
            x = next;
        }
        float a0 = s.AlphasCumprod[0];
        var expected = x0 * MathF.Sqrt(a0) + eps * MathF.Sqrt(1 - a0);
        Assert.True(MaxDiff(x, expected) < 2e-5, $"max diff {MaxDiff(x, expected)}");
    }

    [Theory]
    [InlineData("euler")]
    [InlineData("lms")]
    public void SigmaSchedulersWithTheTrueNoiseStayOnThePath(string key)
    {
        var (x0, eps) = Pair(5);
        using var s = (SigmaSchedulerBase)DiffusionSchedulers.FromConfig(UNetSchedulerScheduleTests.CaseConfig(key));
        s.SetTimesteps(8);
        var x = s.AddNoise(x0, eps, s.TimestepValues[0]);
        Assert.True(MaxDiff(x, x0 + eps * s.SigmaValues[0]) == 0);
        for (int i = 0; i < s.TimestepValues.Count; i++)
        {
            float t = s.TimestepValues[i];
            using (var scaled = s.ScaleModelInput(x, t))
                Assert.True(MaxDiff(scaled, x / MathF.Sqrt(s.SigmaValues[i] * s.SigmaValues[i] + 1)) < 1e-6);
            var next = s.Step(eps, t, x);
            x.Dispose();
            x = next;
            var onPath = x0 + eps * s.SigmaValues[i + 1];
            Assert.True(MaxDiff(x, onPath) < 2e-5, $"{key} step {i}: max diff {MaxDiff(x, onPath)}");
        }
        Assert.Equal(s.TimestepValues.Count, s.StepIndex);
    }

    [Fact]
    public void EulerAddNoiseThenOneStepLandsOnTheNextNoiseLevel()
    {
        var (x0, eps) = Pair(6);
        using var s = (EulerDiscreteScheduler)DiffusionSchedulers.FromConfig(UNetSchedulerScheduleTests.CaseConfig("euler"));
        s.SetTimesteps(20);
        // img2img: enter at step 5.
        s.SetBeginIndex(5);
        var x = s.AddNoise(x0, eps, s.TimestepValues[5]);
        Assert.Equal(0.0, MaxDiff(x, x0 + eps * s.SigmaValues[5]));
        var prev = s.Step(eps, s.TimestepValues[5], x);
        Assert.Equal(6, s.StepIndex);
        Assert.True(MaxDiff(prev, x0 + eps * s.SigmaValues[6]) < 1e-5);
        // After a step, add_noise uses the step index (diffusers' rule with a begin index).
        var renoised = s.AddNoise(x0, eps, s.TimestepValues[0]);
        Assert.Equal(0.0, MaxDiff(renoised, x0 + eps * s.SigmaValues[6]));
    }

    [Fact]
    public void EulerVPredictionOfTheTrueVelocityStaysOnThePath()
    {
        var (x0, eps) = Pair(7);
        using var s = new EulerDiscreteScheduler(new EulerDiscreteSchedulerConfig { PredictionType = "v_prediction", UseKarrasSigmas = true });
        s.SetTimesteps(6);
        var x = s.AddNoise(x0, eps, s.TimestepValues[0]);
        for (int i = 0; i < 6; i++)
        {
            float sigma = s.SigmaValues[i];
            // v = alpha * eps - sigma_t * x0 on the scaled input, alpha = 1/sqrt(sigma²+1), sigma_t = sigma * alpha.
            float alpha = 1 / MathF.Sqrt(sigma * sigma + 1);
            var v = eps * alpha - x0 * (sigma * alpha);
            var next = s.Step(v, s.TimestepValues[i], x);
            x.Dispose();
            x = next;
            Assert.True(MaxDiff(x, x0 + eps * s.SigmaValues[i + 1]) < 5e-5, $"step {i}");
        }
    }

    [Fact]
    public void EulerAncestralDrawsTheSeededGeneratorsNoise()
    {
        var (x0, eps) = Pair(8);
        using var s = (EulerAncestralDiscreteScheduler)DiffusionSchedulers.FromConfig(UNetSchedulerScheduleTests.CaseConfig("euler_a"));
        s.SetTimesteps(10);
        var x = s.AddNoise(x0, eps, s.TimestepValues[2]);
        s.SetBeginIndex(2);
        using var g = new Generator().ManualSeed(1234);
        var prev = s.Step(eps, s.TimestepValues[2], x, g);

        using var replay = new Generator().ManualSeed(1234);
        var noise = replay.Randn(Shape, ScalarType.Float32, CPU);
        double from = s.SigmaValues[2], to = s.SigmaValues[3];
        double up = Math.Sqrt(to * to * (from * from - to * to) / (from * from));
        double down = Math.Sqrt(to * to - up * up);
        var expected = x0 + eps * (float)down + noise * (float)up;
        Assert.True(MaxDiff(prev, expected) < 2e-5, $"max diff {MaxDiff(prev, expected)}");
        // The step drew exactly one tensor of the output's shape: both generators are at the same place now.
        Assert.Equal(0.0, MaxDiff(g.Randn(Shape, ScalarType.Float32, CPU), replay.Randn(Shape, ScalarType.Float32, CPU)));
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    [InlineData(true, 3)]
    public void DpmSolverWithTheTrueNoiseEndsOnX0(bool karras, int order)
    {
        var (x0, eps) = Pair(9);
        using var s = new DPMSolverMultistepScheduler(new DPMSolverMultistepSchedulerConfig
        {
            BetaSchedule = "scaled_linear", BetaStart = 0.00085, BetaEnd = 0.012, UseKarrasSigmas = karras, SolverOrder = order,
        });
        s.SetTimesteps(12);
        var x = s.AddNoise(x0, eps, s.TimestepValues[0]);
        for (int i = 0; i < s.TimestepValues.Count; i++)
        {
            var next = s.Step(eps, s.TimestepValues[i], x);
            x.Dispose();
            x = next;
            // x_t = alpha_t x0 + sigma_t eps with alpha_t = 1 / sqrt(sigma² + 1).
            float sigma = s.SigmaValues[i + 1];
            float alpha = 1 / MathF.Sqrt(sigma * sigma + 1);
            var onPath = x0 * alpha + eps * (sigma * alpha);
            Assert.True(MaxDiff(x, onPath) < 5e-5, $"step {i}: {MaxDiff(x, onPath)}");
        }
        Assert.True(MaxDiff(x, x0) < 5e-5);
    }

    [Fact]
    public void LmsCoefficientsIntegrateTheLagrangeBasis()
    {
        using var s = (LMSDiscreteScheduler)DiffusionSchedulers.FromConfig(UNetSchedulerScheduleTests.CaseConfig("lms"));
        s.SetTimesteps(10);
        for (int t = 0; t < 10; t++)
        {
            int order = Math.Min(t + 1, 4);
            double sum = 0;
            for (int c = 0; c < order; c++) sum += s.LmsCoefficient(order, t, c);
            double width = (double)s.SigmaValues[t + 1] - s.SigmaValues[t];
            // The basis polynomials sum to 1, so their integrals sum to the interval width.
            Assert.True(Math.Abs(sum - width) < 1e-5 * Math.Max(1, Math.Abs(width)), $"t={t}: {sum} vs {width}");
        }
        // scipy's quad stops after its first Gauss-Kronrod pass for every coefficient of these schedules, so the
        // coefficients follow its path exactly.
        foreach (int n in new[] { 1, 4, 10, 25, 50 })
        {
            s.SetTimesteps(n);
            for (int t = 0; t < n; t++)
                for (int c = 0; c < Math.Min(t + 1, 4); c++)
                {
                    s.LmsCoefficient(Math.Min(t + 1, 4), t, c, out bool firstPass);
                    Assert.True(firstPass, $"N={n} t={t} c={c}");
                }
        }
        s.SetTimesteps(10);
        // Order 1: scipy integrates the constant 1 as (sum of the Kronrod weights) * half-width.
        double w = (double)s.SigmaValues[4] - s.SigmaValues[3];
        Assert.Equal(w, s.LmsCoefficient(1, 3, 0), 12);
    }
}
