using System.Text.Json.Nodes;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Schedulers;

public class DiffusionSchedulersTests
{
    private static JsonObject PndmConfig() =>
        SchedulerConfigText.Parse(File.ReadAllText(Fixtures.Path("tiny-sd15/model/scheduler/scheduler_config.json")));

    [Fact]
    public void FromConfigPicksTheClassName()
    {
        using var s = DiffusionSchedulers.FromConfig(PndmConfig());
        var pndm = Assert.IsType<PNDMScheduler>(s);
        Assert.True(pndm.Config.SkipPrkSteps);
        Assert.Equal("scaled_linear", pndm.Config.BetaSchedule);
        Assert.Equal(1, pndm.Config.StepsOffset);
        using var fromFolder = DiffusionSchedulers.FromPretrained(Fixtures.Path("tiny-sd15/model/scheduler"));
        Assert.IsType<PNDMScheduler>(fromFolder);
    }

    [Fact]
    public void SwapDropsUseDefaultValuesKeys()
    {
        var config = PndmConfig();
        // PNDM's saved config says timestep_spacing "leading"; listed as a default value, Euler gets its own (linspace).
        config["_use_default_values"] = new JsonArray("timestep_spacing", "prediction_type");
        using var euler = (EulerDiscreteScheduler)DiffusionSchedulers.FromConfig("EulerDiscreteScheduler", config);
        Assert.Equal("linspace", euler.Config.TimestepSpacing);
        Assert.Equal(0.00085, euler.Config.BetaStart);
        config.Remove("_use_default_values");
        using var leading = (EulerDiscreteScheduler)DiffusionSchedulers.FromConfig("EulerDiscreteScheduler", config);
        Assert.Equal("leading", leading.Config.TimestepSpacing);
    }

    [Fact]
    public void NamesMapToClassesAndOverrides()
    {
        var config = PndmConfig();
        using var karras = (DPMSolverMultistepScheduler)DiffusionSchedulers.FromName("dpmpp_2m_karras", config);
        Assert.True(karras.Config.UseKarrasSigmas);
        Assert.Equal(2, karras.Config.SolverOrder);
        using var plain = (DPMSolverMultistepScheduler)DiffusionSchedulers.FromName("dpmpp_2m", config);
        Assert.False(plain.Config.UseKarrasSigmas);
        foreach (var name in DiffusionSchedulers.KnownNames)
        {
            using var s = DiffusionSchedulers.FromName(name, config);
            Assert.Equal(DiffusionSchedulers.Resolve(name).ClassName, s.ClassName);
            Assert.Equal(ComponentKind.Scheduler, ModelRegistry.KindOf("scheduler", s.ClassName));
        }
        Assert.IsType<EulerAncestralDiscreteScheduler>(DiffusionSchedulers.FromName("euler_a", config));
    }

    [Fact]
    public void UnknownClassesAndNamesListTheKnownOnes()
    {
        var e = Assert.Throws<ArgumentException>(() => DiffusionSchedulers.FromConfig("DPMSolverSDEScheduler", PndmConfig()));
        Assert.Contains("DPMSolverMultistepScheduler", e.Message);
        var n = Assert.Throws<ArgumentException>(() => DiffusionSchedulers.FromName("dpmpp_sde", PndmConfig()));
        Assert.Contains("dpmpp_2m_karras", n.Message);
        var noClass = PndmConfig();
        noClass.Remove("_class_name");
        Assert.Throws<ArgumentException>(() => DiffusionSchedulers.FromConfig(noClass));
    }

    [Fact]
    public void PythonNonFiniteLiteralsAreRead()
    {
        var config = SchedulerConfigText.Parse("{\"_class_name\": \"DPMSolverMultistepScheduler\", \"lambda_min_clipped\": -Infinity, \"note\": \"-Infinity NaN\"}");
        Assert.Equal("-Infinity NaN", (string)config["note"]!);
        using var dpm = (DPMSolverMultistepScheduler)DiffusionSchedulers.FromConfig(config);
        Assert.True(double.IsNegativeInfinity(dpm.Config.LambdaMinClipped));
        using var clipped = (DPMSolverMultistepScheduler)DiffusionSchedulers.FromConfig("DPMSolverMultistepScheduler",
            SchedulerConfigText.Parse("{\"lambda_min_clipped\": -5.1, \"beta_schedule\": \"squaredcos_cap_v2\"}"));
        clipped.SetTimesteps(10);
        Assert.True(clipped.TimestepValues[0] < 999);
    }

    [Fact]
    public void BadInputIsAClearError()
    {
        var config = PndmConfig();
        using var euler = (EulerDiscreteScheduler)DiffusionSchedulers.FromConfig("EulerDiscreteScheduler", config);
        Assert.Throws<ArgumentOutOfRangeException>(() => euler.SetTimesteps(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => euler.SetTimesteps(1001));
        using var sample = TorchSharp.torch.zeros(1, 4, 2, 2);
        Assert.Throws<InvalidOperationException>(() => euler.Step(sample, 999f, sample));
        euler.SetTimesteps(10);
        Assert.Throws<ArgumentException>(() => euler.Step(sample, 998.5f, sample));
        Assert.Throws<ArgumentOutOfRangeException>(() => euler.SetBeginIndex(-1));

        using var ddim = (DDIMScheduler)DiffusionSchedulers.FromConfig("DDIMScheduler", config);
        ddim.SetTimesteps(10);
        Assert.Throws<ArgumentException>(() => ddim.Step(sample, 900.5f, sample));

        Assert.Throws<ArgumentException>(() => new DDIMScheduler(new DDIMSchedulerConfig { BetaSchedule = "quadratic" }));
        Assert.Throws<ArgumentException>(() => new DDIMScheduler(new DDIMSchedulerConfig { TrainedBetas = new[] { 0.1, 0.2 } }));
        Assert.Throws<NotSupportedException>(() => new DDIMScheduler(new DDIMSchedulerConfig { Thresholding = true }));
        Assert.Throws<NotSupportedException>(() => new DPMSolverMultistepScheduler(new DPMSolverMultistepSchedulerConfig { AlgorithmType = "dpmsolver" }));
        Assert.Throws<ArgumentException>(() => new EulerDiscreteScheduler(new EulerDiscreteSchedulerConfig { UseKarrasSigmas = true, UseBetaSigmas = true }));
        Assert.Throws<ArgumentException>(() => new PNDMScheduler(new PNDMSchedulerConfig { PredictionType = "sample" }));
        Assert.Throws<NotSupportedException>(() => new EulerAncestralDiscreteScheduler(new EulerAncestralDiscreteSchedulerConfig { PredictionType = "sample" }));

        using var dpm = new DPMSolverMultistepScheduler();
        dpm.SetTimesteps(2);
        dpm.Step(sample, dpm.TimestepValues[0], sample);
        dpm.Step(sample, dpm.TimestepValues[1], sample);
        Assert.Throws<InvalidOperationException>(() => dpm.Step(sample, dpm.TimestepValues[1], sample));

        Assert.Throws<NotSupportedException>(() => new DEISMultistepScheduler(new DEISMultistepSchedulerConfig { Thresholding = true }));
        Assert.Throws<NotSupportedException>(() => new DEISMultistepScheduler(new DEISMultistepSchedulerConfig { UseFlowSigmas = true }));
        Assert.Throws<ArgumentException>(() => new DEISMultistepScheduler(new DEISMultistepSchedulerConfig { AlgorithmType = "sde-dpmsolver++" }));
        Assert.Throws<NotSupportedException>(() => new LCMScheduler(new LCMSchedulerConfig { Thresholding = true }));
        using var lcm = new LCMScheduler();
        Assert.Throws<ArgumentOutOfRangeException>(() => lcm.SetTimesteps(51));   // more than original_inference_steps
        lcm.SetTimesteps(4);
        Assert.Equal(new[] { 999f, 759f, 499f, 259f }, lcm.TimestepValues);
        Assert.Throws<ArgumentException>(() => lcm.Step(sample, 998f, sample));
    }

    [Fact]
    public void DdpmTcdAndIpndmRefuseBadInputAndTcdTakesGamma()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var sample = TorchSharp.torch.ones(1, 4, 2, 2);
        Assert.Throws<NotSupportedException>(() => new DDPMScheduler(new DDPMSchedulerConfig { Thresholding = true }));
        Assert.Throws<ArgumentException>(() => new DDPMScheduler(new DDPMSchedulerConfig { VarianceType = "fixed_tiny" }));
        Assert.Throws<ArgumentException>(() => new DDPMScheduler(new DDPMSchedulerConfig { TimestepSpacing = "karras" }));
        using var learned = new DDPMScheduler(new DDPMSchedulerConfig { VarianceType = "learned_range" });
        learned.SetTimesteps(4);
        Assert.Equal(new[] { 750f, 500f, 250f, 0f }, learned.TimestepValues);
        var e = Assert.Throws<ArgumentException>(() => learned.Step(sample, 750f, sample));   // no predicted-variance half
        Assert.Contains("twice the sample's channels", e.Message);
        Assert.Throws<ArgumentException>(() => learned.Step(TorchSharp.torch.cat(new[] { sample, sample }, 1), 749f, sample));
        Assert.Equal(new[] { 1, 4, 2, 2 }, learned.Step(TorchSharp.torch.cat(new[] { sample, sample * 0 }, 1), 750f, sample).shape.Select(d => (int)d));

        using var tcd = (TCDScheduler)DiffusionSchedulers.FromName("tcd", PndmConfig());
        Assert.Throws<ArgumentOutOfRangeException>(() => tcd.SetTimesteps(51));   // more than original_inference_steps
        tcd.SetTimesteps(4);
        Assert.Equal(new[] { 999f, 759f, 499f, 259f }, tcd.TimestepValues);
        Assert.Throws<ArgumentException>(() => tcd.Step(sample, 999f, sample, 1.5));
        Assert.Throws<ArgumentException>(() => tcd.Step(sample, 999f, sample, 0.3, useClippedModelOutput: true));
        // The plain step is gamma 0.3; gamma 0 draws nothing and is deterministic.
        using var g1 = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(7);
        using var g2 = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(7);
        var plain = tcd.Step(sample, 999f, sample, g1);
        tcd.SetTimesteps(4);
        var gamma = tcd.Step(sample, 999f, sample, TCDScheduler.DefaultGamma, generator: g2);
        Assert.Equal(0f, (plain - gamma).abs().max().item<float>());
        tcd.SetTimesteps(4);
        var det1 = tcd.Step(sample, 999f, sample, 0.0, generator: g1);
        tcd.SetTimesteps(4);
        var det2 = tcd.Step(sample, 999f, sample, 0.0);
        Assert.Equal(0f, (det1 - det2).abs().max().item<float>());
        Assert.NotEqual(0f, (det1 - gamma).abs().max().item<float>());

        using var ipndm = (IPNDMScheduler)DiffusionSchedulers.FromName("ipndm", PndmConfig());
        Assert.Throws<InvalidOperationException>(() => ipndm.Step(sample, 1f, sample));   // before SetTimesteps
        ipndm.SetTimesteps(4);
        Assert.Equal(1f, ipndm.TimestepValues[0]);
        Assert.Throws<NotSupportedException>(() => ipndm.AddNoise(sample, sample, ipndm.TimestepValues[1]));
        Assert.Throws<ArgumentException>(() => ipndm.Step(sample, 0.5f, sample));   // not in the schedule
        Assert.Throws<ArgumentException>(() => new IPNDMScheduler(new IPNDMSchedulerConfig { TrainedBetas = new[] { 0.5 } }));
    }

    [Fact]
    public void TrainedBetasAndZeroSnrRescale()
    {
        var betas = Enumerable.Range(0, 1000).Select(i => 0.0001 + i * 1e-5).ToArray();
        using var trained = new DDIMScheduler(new DDIMSchedulerConfig { TrainedBetas = betas });
        double product = 1;
        for (int i = 0; i < 1000; i++) product *= 1 - (double)(float)betas[i];
        Assert.Equal(product, trained.AlphasCumprod[^1], 6);

        using var zsnr = new EulerDiscreteScheduler(new EulerDiscreteSchedulerConfig { RescaleBetasZeroSnr = true, BetaSchedule = "scaled_linear", BetaStart = 0.00085, BetaEnd = 0.012 });
        Assert.Equal(MathF.Pow(2, -24), zsnr.AlphasCumprod[^1]);
        using var ddimZsnr = new DDIMScheduler(new DDIMSchedulerConfig { RescaleBetasZeroSnr = true });
        Assert.Equal(0f, ddimZsnr.AlphasCumprod[^1], 6);
        using var cosine = new PNDMScheduler(new PNDMSchedulerConfig { BetaSchedule = "squaredcos_cap_v2" });
        Assert.InRange(cosine.AlphasCumprod[0], 0.99, 1.0);
    }
}
