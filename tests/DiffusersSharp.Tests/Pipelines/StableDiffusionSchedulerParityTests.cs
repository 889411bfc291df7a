using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Text-to-image on tiny-sd15 with the newer schedulers (UniPC, DPM++ 2M SDE, LCM, DDPM, TCD with eta 0.3) against diffusers' StableDiffusionPipeline
/// (fixture local-diffusers/sd-schedulers, made by tools/reference/sd_schedulers.py with diffusers 0.36.0 on torch 1.13
/// CPU, float32), given the same seeded prompt embeddings: the scheduler swapped as <c>Class.from_config(pipe.scheduler.config,
/// ...)</c>, CFG 7.5 and 8 steps (LCM and TCD: guidance 1, so no CFG, and 4 steps), every step's latents, the final latents
/// and the image. DPM++ 2M SDE, LCM, DDPM and TCD also check that the scheduler's noise is drawn from the request's generator after the
/// initial latents, as diffusers draws it.
/// Bounds as the SD / SDXL parity tests: 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class StableDiffusionSchedulerParityTests(TinyUNetPipelines models, ITestOutputHelper output) : IClassFixture<TinyUNetPipelines>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, TorchSharp.torch.Tensor> Expected = Fixtures.Expected("local-diffusers/sd-schedulers/expected.safetensors");

    private void Close(TorchSharp.torch.Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], Tolerance, key):G3} (max |expected| {Expected[key].abs().max().item<float>():G3})");

    [Theory]
    [InlineData("unipc", 123456L, 8, 7.5, 0.0)]
    [InlineData("dpmpp_2m_sde", 42L, 8, 7.5, 0.0)]
    [InlineData("lcm", 31337L, 4, 1.0, 0.0)]
    [InlineData("ddpm", 777L, 8, 7.5, 0.0)]
    [InlineData("tcd", 2468L, 4, 1.0, 0.3)]
    public void TextToImageMatchesDiffusers(string scheduler, long seed, int numSteps, double guidance, double eta)
    {
        // As the script: DDPM and TCD are swapped in after the pipeline is built (so the constructor's outdated-config
        // fix-up does not turn DDPM's default clip_sample off), the others are built with it.
        bool swappedAfter = scheduler is "ddpm" or "tcd";
        var pndm = (System.Text.Json.Nodes.JsonObject)models.Sd15Scheduler.DeepClone();
        pndm["_class_name"] = "PNDMScheduler";
        models.Sd15.UseScheduler(pndm); // every case starts from tiny-sd15's config, as the script's from_config(base)
        if (!swappedAfter) models.Sd15.UseScheduler(scheduler);
        using var pipe = new StableDiffusionPipeline(models.Sd15);
        if (swappedAfter) models.Sd15.UseScheduler(scheduler);
        StableDiffusionRequest Request(OutputType type, Action<StepEndContext>? onStep) => new()
        {
            PromptEmbeds = Expected["prompt_embeds"], NegativePromptEmbeds = Expected["negative_prompt_embeds"],
            NumInferenceSteps = numSteps, GuidanceScale = guidance, Height = 64, Width = 64, OutputType = type,
            Generator = new Generator("cpu").ManualSeed(seed), CallbackOnStepEnd = onStep, Eta = eta,
        };
        int steps = 0;
        using (var latents = pipe.Generate(Request(OutputType.Latent, c => { Close(c.Latents, $"{scheduler}.step{c.Step}.latents"); steps++; })))
            Close(latents.Tensor!, $"{scheduler}.latents");
        Assert.Equal(numSteps, steps);
        using var image = pipe.Generate(Request(OutputType.Numpy, null));
        Close(image.Tensor!, $"{scheduler}.image");
    }
}
