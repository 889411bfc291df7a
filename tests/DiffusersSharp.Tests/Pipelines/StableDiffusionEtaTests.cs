using System.Text.Json.Nodes;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// DDIM's eta through the pipelines (diffusers' <c>prepare_extra_step_kwargs</c>): 0 is the deterministic step the
/// parity fixture measures, above 0 each step adds generator noise (reproducible by seed, per image with a generator
/// list), and schedulers whose step has no eta ignore it.
/// </summary>
public sealed class StableDiffusionEtaTests(TinyUNetPipelines models) : IClassFixture<TinyUNetPipelines>
{
    private static StableDiffusionRequest Small(long seed, double eta) => new()
    {
        Prompt = "a red circle", NumInferenceSteps = 4, Height = 64, Width = 48, Eta = eta, OutputType = OutputType.Latent,
        Generator = new Generator("cpu").ManualSeed(seed),
    };

    private StableDiffusionPipelineOutput RunDdim(StableDiffusionRequest request)
    {
        var c = models.Sd15;
        var original = (JsonObject)c.SchedulerConfig.DeepClone();
        c.UseScheduler("ddim");
        try
        {
            using var pipe = new StableDiffusionPipeline(c);
            return pipe.Generate(request);
        }
        finally
        {
            c.UseScheduler(original);
        }
    }

    [Fact]
    public void TheEtaStepAtZeroIsTheDeterministicStepBitForBitAndDrawsNothing()
    {
        using var ddim = new DDIMScheduler(new DDIMSchedulerConfig { StepsOffset = 1 });
        ddim.SetTimesteps(5);
        using var generator = new Generator("cpu").ManualSeed(9);
        using var model = generator.Randn([2, 4, 8, 8], ScalarType.Float32, CPU);
        using var sample = generator.Randn([2, 4, 8, 8], ScalarType.Float32, CPU);
        using var used = new Generator("cpu").ManualSeed(1);
        foreach (float t in ddim.TimestepValues)
        {
            using var plain = ((IDiffusionScheduler)ddim).Step(model, t, sample);
            using var eta = ((IEtaStepScheduler)ddim).Step(model, t, sample, 0.0, generator: used);
            Assert.True(plain.equal(eta).all().item<bool>(), $"timestep {t}");
        }
        // eta 0 draws nothing: the generator is where a fresh one with its seed is.
        using var fresh = new Generator("cpu").ManualSeed(1);
        using var a = used.Randn([4], ScalarType.Float32, CPU);
        using var b = fresh.Randn([4], ScalarType.Float32, CPU);
        Assert.True(a.equal(b).all().item<bool>());
        using var noise = zeros(2, 4, 8, 8);
        Assert.Throws<ArgumentException>(() => ((IEtaStepScheduler)ddim).Step(model, 901, sample, 0.5, generator: used, varianceNoise: noise));
    }

    [Fact]
    public void EtaZeroKeepsDiffusersDdimResult()
    {
        // tiny-sd15's t2i_ddim case (diffusers' default eta 0.0), asked for with an explicit Eta = 0.
        var meta = SchedulerConfigText.Parse(File.ReadAllText(Fixtures.Path("tiny-sd15/meta.json")))["cases"]!["t2i_ddim"]!.AsObject();
        var c = models.Sd15;
        var original = (JsonObject)c.SchedulerConfig.DeepClone();
        try
        {
            using var pipe = new StableDiffusionPipeline(c);
            c.UseScheduler(meta["scheduler_config"]!.AsObject()); // on the built pipeline, as the fixture's DDIM ran (clip_sample True)
            using var generator = new Generator("cpu").ManualSeed(meta["seed"]!.GetValue<long>());
            using var latents = pipe.Generate(new StableDiffusionRequest
            {
                Prompt = meta["prompt"]!.GetValue<string>(), NegativePrompt = meta["negative_prompt"]!.GetValue<string>(),
                NumInferenceSteps = meta["num_inference_steps"]!.GetValue<int>(), GuidanceScale = meta["guidance_scale"]!.GetValue<double>(),
                Height = meta["height"]!.GetValue<int>(), Width = meta["width"]!.GetValue<int>(), Generator = generator,
                OutputType = OutputType.Latent, Eta = 0.0,
            });
            var expected = Fixtures.Expected("tiny-sd15/expected.safetensors")["t2i_ddim.latents"];
            TensorAssert.Close(latents.Tensor!, expected, 1e-4, "t2i_ddim latents with eta 0");
        }
        finally
        {
            c.UseScheduler(original);
        }
    }

    [Fact]
    public void EtaAboveZeroAddsSeededNoise()
    {
        using var zero = RunDdim(Small(5, 0.0));
        using var noisy = RunDdim(Small(5, 0.7));
        using var again = RunDdim(Small(5, 0.7));
        using var otherSeed = RunDdim(Small(6, 0.7));
        Assert.True(TensorAssert.MaxAbsDiff(noisy.Tensor!, zero.Tensor!) > 1e-2);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(noisy.Tensor!, again.Tensor!));
        Assert.True(TensorAssert.MaxAbsDiff(noisy.Tensor!, otherSeed.Tensor!) > 1e-2);
    }

    [Fact]
    public void WithAGeneratorListEachImageDrawsItsEtaNoiseFromItsOwnGenerator()
    {
        StableDiffusionPipelineOutput Pair(long first, long second)
        {
            using var g1 = new Generator("cpu").ManualSeed(first);
            using var g2 = new Generator("cpu").ManualSeed(second);
            return RunDdim(Small(0, 0.7) with { Generator = null, Generators = [g1, g2], NumImagesPerPrompt = 2 });
        }
        using var pair = Pair(11, 12);
        using var otherSecond = Pair(11, 13);
        // Same batch shape: the first image's draws come from its own generator only, so it is bit for bit the same.
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(pair.Tensor![..1], otherSecond.Tensor![..1]));
        Assert.True(TensorAssert.MaxAbsDiff(pair.Tensor[1..], otherSecond.Tensor[1..]) > 1e-2);
        // And it is the one-image run with that seed, up to the UNet's batch-2 rounding (measured 1.8e-5 after 4 noisy
        // steps): the component tolerance.
        using var single = RunDdim(Small(11, 0.7));
        TensorAssert.Close(pair.Tensor[..1], single.Tensor!, 1e-4);
    }

    [Fact]
    public void SchedulersWithoutEtaIgnoreIt()
    {
        Assert.Equal("EulerDiscreteScheduler", models.Sdxl.SchedulerClassName);
        using var pipe = new StableDiffusionXLPipeline(models.Sdxl);
        using var zero = pipe.Generate(Small(5, 0.0));
        using var eta = pipe.Generate(Small(5, 0.7));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(zero.Tensor!, eta.Tensor!));
    }
}
