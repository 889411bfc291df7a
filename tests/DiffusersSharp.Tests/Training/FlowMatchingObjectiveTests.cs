using DiffusersSharp.Schedulers;
using DiffusersSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Training;

public class FlowMatchingObjectiveTests
{
    private static FlowMatchingObjective Objective(LossWeighting weighting = LossWeighting.None, TimestepSampling sampling = TimestepSampling.LogitNormal) =>
        new(new FlowMatchEulerDiscreteSchedulerConfig { Shift = 3.0 }, new FlowMatchingOptions { Weighting = weighting, Sampling = sampling });

    [Fact]
    public void TrainingScheduleIsTheShiftedLinearSchedule()
    {
        var o = Objective();
        Assert.Equal(1000, o.TrainingSigmas.Count);
        // Index i holds t = (1000 - i) / 1000, shifted: 3t / (1 + 2t); timestep = sigma * 1000.
        foreach (int i in new[] { 0, 250, 500, 999 })
        {
            double t = (1000.0 - i) / 1000.0, expected = 3 * t / (1 + 2 * t);
            Assert.Equal(expected, o.TrainingSigmas[i], 6);
            Assert.Equal(expected * 1000, o.TrainingTimesteps[i], 3);
        }
        Assert.Equal(1f, o.TrainingSigmas[0]);
    }

    [Fact]
    public void IndicesTruncateUTimesTAndStayInTheSchedule()
    {
        var o = Objective();
        using var u = tensor(new float[] { 0f, 0.5f, 0.7499f, 0.9999f, 1f });
        Assert.Equal(new long[] { 0, 500, 749, 999, 999 }, o.Indices(u));
    }

    [Fact]
    public void LogitNormalDensityIsSigmoidOfSeededNormals()
    {
        var o = Objective();
        using var g1 = new torch.Generator(7);
        using var g2 = new torch.Generator(7);
        using var u = o.SampleDensity(6, g1);
        using var n = randn([6], generator: g2);
        using var expected = n.sigmoid();
        Assert.Equal(0.0, Support.TensorAssert.MaxAbsDiff(u, expected), 7);
    }

    [Theory]
    [InlineData("logit_normal", TimestepSampling.LogitNormal, LossWeighting.None)]
    [InlineData("mode", TimestepSampling.Mode, LossWeighting.None)]
    [InlineData("sigma_sqrt", TimestepSampling.Uniform, LossWeighting.SigmaSqrt)]
    [InlineData("cosmap", TimestepSampling.Uniform, LossWeighting.CosMap)]
    [InlineData("none", TimestepSampling.Uniform, LossWeighting.None)]
    public void WeightingSchemesSplitAsDiffusersTrainingScriptsDo(string scheme, TimestepSampling sampling, LossWeighting weighting)
    {
        var options = FlowMatchingOptions.FromWeightingScheme(scheme, logitMean: -0.5, logitStd: 1.5, modeScale: 1.1);
        Assert.Equal((sampling, weighting), (options.Sampling, options.Weighting));
        if (sampling == TimestepSampling.LogitNormal) Assert.Equal((-0.5, 1.5), (options.LogitMean, options.LogitStd));
        if (sampling == TimestepSampling.Mode) Assert.Equal(1.1, options.ModeScale);
        Assert.Throws<ArgumentException>(() => FlowMatchingOptions.FromWeightingScheme("logit-normal"));
        Assert.Throws<ArgumentException>(() => FlowMatchingOptions.FromWeightingScheme(scheme, logitStd: 0));
        Assert.Throws<ArgumentException>(() => new FlowMatchingObjective(new FlowMatchEulerDiscreteSchedulerConfig(), options with { LogitStd = -1 }));
    }

    [Fact]
    public void LogitNormalMeanAndStdScaleTheSeededNormals()
    {
        // diffusers: torch.normal(mean=logit_mean, std=logit_std, size=(B,), generator=g).sigmoid().
        var o = new FlowMatchingObjective(new FlowMatchEulerDiscreteSchedulerConfig(), FlowMatchingOptions.FromWeightingScheme("logit_normal", -1.0, 2.0));
        using var g1 = new torch.Generator(11);
        using var g2 = new torch.Generator(11);
        using var u = o.SampleDensity(32, g1);
        using var expected = (randn([32], generator: g2) * 2.0 - 1.0).sigmoid();
        Assert.Equal(0.0, Support.TensorAssert.MaxAbsDiff(u, expected), 6);
    }

    [Fact]
    public void ModeDensityMatchesTheFormula()
    {
        var o = Objective(sampling: TimestepSampling.Mode);
        using var g1 = new torch.Generator(3);
        using var g2 = new torch.Generator(3);
        using var u = o.SampleDensity(4, g1);
        var r = rand([4], generator: g2).data<float>().ToArray();
        var got = u.data<float>().ToArray();
        for (int i = 0; i < 4; i++)
        {
            double c = Math.Cos(Math.PI * r[i] / 2);
            Assert.Equal(1 - r[i] - 1.29 * (c * c - 1 + r[i]), got[i], 5);
        }
    }

    [Fact]
    public void NoisyInputTargetAndLossAreTheHandComputedValues()
    {
        using var x0 = tensor(new float[] { 1, 2, 3, 4 }, [2, 2]);
        using var noise = tensor(new float[] { 0, 1, -1, 2 }, [2, 2]);
        using var sigmas = tensor(new float[] { 0.25f, 0.5f });
        using var noisy = FlowMatchingObjective.AddNoise(x0, noise, sigmas);
        // (1 - s) x0 + s n: row 0: 0.75*1 + 0, 0.75*2 + 0.25; row 1: 0.5*3 - 0.5, 0.5*4 + 1.
        Assert.Equal(new float[] { 0.75f, 1.75f, 1f, 3f }, noisy.data<float>().ToArray());
        using var target = FlowMatchingObjective.Target(x0, noise);
        Assert.Equal(new float[] { -1, -1, -4, -2 }, target.data<float>().ToArray());
        using var pred = tensor(new float[] { 0, -1, -2, -2 }, [2, 2]);
        using var w = tensor(new float[] { 1f, 3f });
        using var loss = FlowMatchingObjective.Loss(pred, target, w);
        // Per sample: mean(w (p - t)^2): row 0: (1 + 0) / 2 = 0.5; row 1: 3 (4 + 0) / 2 = 6; mean 3.25.
        Assert.Equal(3.25f, loss.item<float>());
    }

    [Theory]
    [InlineData(LossWeighting.None, 0.5, 1.0)]
    [InlineData(LossWeighting.SigmaSqrt, 0.5, 4.0)]
    [InlineData(LossWeighting.CosMap, 0.5, 4.0 / Math.PI)]
    [InlineData(LossWeighting.CosMap, 0.25, 2.0 / (Math.PI * 0.625))]
    public void Weightings(LossWeighting weighting, double sigma, double expected)
    {
        using var s = tensor(new[] { (float)sigma });
        using var w = Objective(weighting).Weighting(s);
        Assert.Equal(expected, w.item<float>(), 5);
    }

    [Fact]
    public void SampleReadsTimestepsAndSigmasAtTheDrawnIndices()
    {
        var o = Objective();
        using var x0 = randn([3, 2, 2, 2]);
        using var noise = randn([3, 2, 2, 2]);
        using var g = new torch.Generator(11);
        var batch = o.Sample(x0, noise, g);
        using var g2 = new torch.Generator(11);
        using var u = o.SampleDensity(3, g2);
        Assert.Equal(o.Indices(u), batch.Indices);
        var sig = batch.Sigmas.data<float>().ToArray();
        var ts = batch.Timesteps.data<float>().ToArray();
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(o.TrainingSigmas[(int)batch.Indices[i]], sig[i]);
            Assert.Equal(o.TrainingTimesteps[(int)batch.Indices[i]], ts[i]);
        }
        using var expectedNoisy = FlowMatchingObjective.AddNoise(x0, noise, batch.Sigmas);
        Assert.Equal(0.0, Support.TensorAssert.MaxAbsDiff(batch.NoisyInput, expectedNoisy));
        Assert.Throws<ArgumentException>(() => o.Sample(x0, randn([3, 2, 2, 1]), g));
    }
}
