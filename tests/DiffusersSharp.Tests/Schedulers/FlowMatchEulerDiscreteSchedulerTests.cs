using System.Text.Json;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Schedulers;

public class FlowMatchEulerDiscreteSchedulerTests
{
    private static FlowMatchEulerDiscreteScheduler Sd3() =>
        FlowMatchEulerDiscreteScheduler.FromPretrained(Fixtures.Path("tiny-sd3/model/scheduler"));

    private static Dictionary<int, (float[] Timesteps, float[] Sigmas)> ReferenceSchedules()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("tiny-sd3/scheduler.json")));
        var result = new Dictionary<int, (float[], float[])>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            float[] Read(string name) => p.Value.GetProperty(name).EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();
            result[int.Parse(p.Name)] = (Read("timesteps"), Read("sigmas"));
        }
        return result;
    }

    private static void AssertBitEqual(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    [Fact]
    public void ReadsTheSd3Config()
    {
        using var s = Sd3();
        Assert.Equal(3.0, s.Config.Shift);
        Assert.Equal(1000, s.Config.NumTrainTimesteps);
        Assert.Equal("exponential", s.Config.TimeShiftType);
        Assert.Null(s.Config.ShiftTerminal);
        Assert.Equal(1, s.Order);
    }

    [Fact]
    public void MatchesDiffusersTimestepsAndSigmasBitForBit()
    {
        var reference = ReferenceSchedules();
        Assert.Equal(new[] { 1, 2, 4, 10, 28, 40, 50 }, reference.Keys.Order().ToArray());
        using var s = Sd3();
        foreach (var (n, (timesteps, sigmas)) in reference)
        {
            s.SetTimesteps(n);
            AssertBitEqual(timesteps, s.TimestepValues.ToArray(), $"N={n} timesteps");
            AssertBitEqual(sigmas, s.SigmaValues.ToArray(), $"N={n} sigmas");
            Assert.Equal(ScalarType.Float32, s.Timesteps.dtype);
            AssertBitEqual(timesteps, s.Timesteps.data<float>().ToArray(), $"N={n} timesteps tensor");
            AssertBitEqual(sigmas, s.Sigmas.data<float>().ToArray(), $"N={n} sigmas tensor");
        }
    }

    [Fact]
    public void CustomSigmasAreShiftedInFloat32AndTheSecondDuplicateIsFound()
    {
        using var s = new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0 });
        var custom = new[] { 1.0f, 0.5f, 0.5f, 0.1f };
        s.SetTimesteps(4, sigmas: custom);
        for (int i = 0; i < 4; i++)
        {
            float x = custom[i];
            float expected = 3f * x / (1f + 2f * x);
            Assert.Equal(expected, s.SigmaValues[i]);
            Assert.Equal(expected * 1000f, s.TimestepValues[i]);
        }
        Assert.Equal(0f, s.SigmaValues[4]);
        Assert.Equal(2, s.IndexForTimestep(s.TimestepValues[1]));
        Assert.Equal(0, s.IndexForTimestep(1000f));
        Assert.Throws<ArgumentException>(() => s.IndexForTimestep(123.25f));
    }

    [Fact]
    public void DynamicShiftingAtLnThreeEqualsAStaticShiftOfThree()
    {
        using var dyn = new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { UseDynamicShifting = true });
        using var stat = new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0 });
        Assert.Throws<ArgumentException>(() => dyn.SetTimesteps(10));
        dyn.SetTimesteps(10, mu: Math.Log(3.0));
        // The dynamic scheduler's training sigmas are unshifted, so compare with a static schedule over the same range.
        using var stat1 = new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { Shift = 1.0 });
        stat1.SetShift(3.0);
        stat1.SetTimesteps(10);
        for (int i = 0; i < 11; i++) Assert.Equal(stat1.SigmaValues[i], dyn.SigmaValues[i], 6);
        Assert.NotEqual(stat.SigmaValues[9], dyn.SigmaValues[9]); // the SD3 schedule shifts sigma_min twice

        using var lin = new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { UseDynamicShifting = true, TimeShiftType = "linear" });
        lin.SetTimesteps(10, mu: 3.0);
        for (int i = 0; i < 11; i++) Assert.Equal(stat1.SigmaValues[i], lin.SigmaValues[i], 6);
    }

    [Fact]
    public void CalculateShiftIsLinearBetweenBaseAndMax()
    {
        Assert.Equal(0.5, FlowMatchEulerDiscreteScheduler.CalculateShift(256), 12);
        Assert.Equal(1.15, FlowMatchEulerDiscreteScheduler.CalculateShift(4096), 12);
        Assert.Equal(0.5 + 0.65 * (4096 - 256) / 2.0 / 3840.0, FlowMatchEulerDiscreteScheduler.CalculateShift((256 + 4096) / 2), 12);
    }

    [Fact]
    public void ShiftTerminalEndsTheScheduleThere()
    {
        using var s = new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0, ShiftTerminal = 0.1 });
        s.SetTimesteps(8);
        Assert.Equal(0.1f, s.SigmaValues[7], 6);
        Assert.Equal(1f, s.SigmaValues[0], 6);
    }

    [Fact]
    public void KarrasExponentialAndBetaKeepTheEndpoints()
    {
        using var sd3 = Sd3();
        sd3.SetTimesteps(12);
        foreach (var cfg in new[] { new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0, UseKarrasSigmas = true },
                                    new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0, UseExponentialSigmas = true },
                                    new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0, UseBetaSigmas = true } })
        {
            using var s = new FlowMatchEulerDiscreteScheduler(cfg);
            s.SetTimesteps(12);
            Assert.Equal(sd3.SigmaValues[0], s.SigmaValues[0], 6);
            Assert.Equal(sd3.SigmaValues[11], s.SigmaValues[11], 6);
            Assert.NotEqual(sd3.SigmaValues[5], s.SigmaValues[5]);
            for (int i = 0; i < 12; i++) Assert.True(s.SigmaValues[i] > s.SigmaValues[i + 1]);
        }
        Assert.Throws<ArgumentException>(() => new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { UseKarrasSigmas = true, UseExponentialSigmas = true }));
    }

    [Theory]
    [InlineData(0.5, 0.5)]
    [InlineData(0.6, 0.6)]
    [InlineData(2.0, 3.0)]
    public void BetaQuantilesInvertTheBetaCdf(double a, double b)
    {
        foreach (var p in new[] { 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999 })
        {
            double x = BetaDistribution.Ppf(p, a, b);
            double expected = (a, b) switch
            {
                (0.5, 0.5) => Math.Pow(Math.Sin(Math.PI * p / 2), 2),            // arcsine distribution
                (2.0, 3.0) => Bisect(t => 6 * t * t - 8 * t * t * t + 3 * Math.Pow(t, 4), p), // I_x(2,3) polynomial
                _ => double.NaN,
            };
            if (!double.IsNaN(expected)) Assert.Equal(expected, x, 12);
            if (a == b) Assert.Equal(1 - x, BetaDistribution.Ppf(1 - p, a, b), 12);
        }
        Assert.Equal(0.5, BetaDistribution.Ppf(0.5, 0.6, 0.6), 14);
    }

    private static double Bisect(Func<double, double> cdf, double p)
    {
        double lo = 0, hi = 1;
        for (int i = 0; i < 100; i++) { double m = (lo + hi) / 2; if (cdf(m) < p) lo = m; else hi = m; }
        return (lo + hi) / 2;
    }

    [Fact]
    public void StepIsAnEulerUpdateInFloat32()
    {
        using var s = Sd3();
        s.SetTimesteps(4);
        var gen = new TorchSharp.torch.Generator(7);
        using var sample = randn(new long[] { 1, 2, 3, 4 }, generator: gen);
        using var v = randn(new long[] { 1, 2, 3, 4 }, generator: gen);
        var x = sample.data<float>().ToArray();
        var vv = v.data<float>().ToArray();
        var current = sample;
        var cur = x;
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(i == 0 ? null : i, s.StepIndex);
            using var t = tensor(s.TimestepValues[i]);
            var next = s.Step(v, t, current);
            float dt = s.SigmaValues[i + 1] - s.SigmaValues[i];
            var expected = cur.Select((c, k) => c + dt * vv[k]).ToArray();
            AssertBitEqual(expected, next.data<float>().ToArray(), $"step {i}");
            cur = expected;
            if (!ReferenceEquals(current, sample)) current.Dispose();
            current = next;
        }
        current.Dispose();
        Assert.Equal(4, s.StepIndex);
        Assert.Throws<InvalidOperationException>(() => s.Step(v, 8.928572f, sample));
    }

    [Fact]
    public void StepReturnsTheModelDtypeAndStartsAtTheBeginIndex()
    {
        using var s = Sd3();
        s.SetTimesteps(10);
        s.SetBeginIndex(6);
        using var sample = ones(2, 3, dtype: ScalarType.Float32);
        using var v = full(new long[] { 2, 3 }, 2.0, dtype: ScalarType.BFloat16);
        using var prev = s.Step(v, s.TimestepValues[6], sample);
        Assert.Equal(ScalarType.BFloat16, prev.dtype);
        Assert.Equal(7, s.StepIndex);
        float dt = s.SigmaValues[7] - s.SigmaValues[6];
        Assert.Equal(1.0 + 2.0 * dt, prev.to(ScalarType.Float32).data<float>()[0], 2);
    }

    [Fact]
    public void ScaleNoiseMixesNoiseAndSampleAtTheScheduleSigma()
    {
        using var s = Sd3();
        s.SetTimesteps(10);
        var gen = new TorchSharp.torch.Generator(3);
        using var sample = randn(new long[] { 2, 4, 2, 2 }, generator: gen);
        using var noise = randn(new long[] { 2, 4, 2, 2 }, generator: gen);
        var xs = sample.data<float>().ToArray();
        var ns = noise.data<float>().ToArray();

        // img2img: begin index set, before any step -> sigma[begin].
        s.SetBeginIndex(3);
        using var t = tensor(new[] { s.TimestepValues[3], s.TimestepValues[3] });
        using var mixed = s.ScaleNoise(sample, t, noise);
        float sigma = s.SigmaValues[3];
        AssertBitEqual(xs.Select((x, k) => sigma * ns[k] + (1f - sigma) * x).ToArray(), mixed.data<float>().ToArray(), "begin index");

        // No begin index: sigma looked up per timestep.
        s.SetTimesteps(10);
        using var t2 = tensor(new[] { s.TimestepValues[1], s.TimestepValues[8] });
        using var mixed2 = s.ScaleNoise(sample, t2, noise);
        var m2 = mixed2.data<float>().ToArray();
        int per = xs.Length / 2;
        for (int k = 0; k < xs.Length; k++)
        {
            float sg = s.SigmaValues[k < per ? 1 : 8];
            Assert.Equal(BitConverter.SingleToInt32Bits(sg * ns[k] + (1f - sg) * xs[k]), BitConverter.SingleToInt32Bits(m2[k]));
        }
    }

    [Fact]
    public void RejectsInvalidInput()
    {
        using var s = Sd3();
        using var sample = zeros(1, 2);
        Assert.Throws<InvalidOperationException>(() => s.Step(sample, 1000f, sample));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.SetTimesteps(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.SetTimesteps(-3));
        Assert.Throws<ArgumentException>(() => s.SetTimesteps(3, sigmas: new[] { 1f, 0.5f }));
        s.SetTimesteps(4);
        using var intT = tensor(1000L);
        var e = Assert.Throws<ArgumentException>(() => s.Step(sample, intT, sample));
        Assert.Contains("Integer timesteps", e.Message);
        Assert.Throws<ArgumentException>(() => s.Step(sample, 999.5f, sample));
        Assert.Throws<ArgumentException>(() => s.ScaleNoise(sample, intT, sample));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.SetBeginIndex(-1));
    }
}

public class FlowMatchEulerDiscreteSchedulerLeakTests
{
    [Fact]
    public void StepAndScaleNoiseLeaveOnlyTheirResultsInTheCallersScope()
    {
        using var s = new FlowMatchEulerDiscreteScheduler(new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0 });
        s.SetTimesteps(4);
        _ = s.Timesteps; // created once, owned by the scheduler
        using var scope = NewDisposeScope();
        var sample = ones(1, 2, 2, 2);
        var noise = zeros(1, 2, 2, 2);
        var t = tensor(new[] { s.TimestepValues[0] });
        int before = scope.DisposablesCount;
        var mixed = s.ScaleNoise(sample, t, noise);
        Assert.Equal(before + 1, scope.DisposablesCount);
        var prev = s.Step(noise, t, mixed);
        Assert.Equal(before + 2, scope.DisposablesCount);
        Assert.Equal(1, s.StepIndex);
    }
}
