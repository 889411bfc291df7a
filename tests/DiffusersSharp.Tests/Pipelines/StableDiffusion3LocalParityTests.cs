using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The SD3 pipelines end to end, after prompt encoding, against diffusers' own run (fixture local-diffusers/sd3, made by
/// tools/reference/sd3.py with diffusers 0.36.0 on torch 1.13 CPU, float32). The shared fixture cannot check this (its T5
/// ran with dropout, differently in every call, see <see cref="StableDiffusion3ParityTests"/>); here both sides get the
/// same prompt embeddings, the shared fixture's stored ones. Checked: schedule, draws, CFG, skip-layer guidance, img2img
/// (with the Lanczos resize to the default 256 x 256) and inpainting preparation, every step's latents and the decode.
/// Measured here: latents 1.1e-5 .. 2.4e-4 on latents up to 40 (relative to each tensor's max at most 9.5e-6: inpaint
/// step 0, 7.5e-5 of 7.9), images 3.3e-6 .. 1.2e-5. The latents differ more than Flux's because of float32 sin(t·f) at
/// t = 999: torch 1.13's float32 exp is 1 ulp off the correctly rounded value in 15 of the 128 frequencies (libtorch
/// 2.10's in 2), which moves the timestep embedding by 2.9e-5; diffusers computes that embedding in float32 even in a
/// float64 run, and our float64 transformer then equals diffusers' float64 one within 6e-14 from the same embedding.
/// Bounds as the SD / SDXL parity tests: 5e-5 x max(1, max |expected|) for latents, 5e-5 for images in [0, 1].
/// </summary>
public sealed class StableDiffusion3LocalParityTests(ITestOutputHelper output) : IClassFixture<TinySd3Pipeline>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Shared = Fixtures.Expected();
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd3/expected.safetensors");

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], Tolerance, key):G3}");

    /// <summary>The shared fixture's stored embeddings of <paramref name="embeds"/>, every step checked, latents out.</summary>
    private static T Prepared<T>(T request, string embeds, long seed, Action<StepEndContext>? onStep) where T : StableDiffusion3Request => request with
    {
        PromptEmbeds = Shared[$"{embeds}.prompt_embeds"], NegativePromptEmbeds = Shared[$"{embeds}.negative_prompt_embeds"],
        PooledPromptEmbeds = Shared[$"{embeds}.pooled_prompt_embeds"], NegativePooledPromptEmbeds = Shared[$"{embeds}.negative_pooled_prompt_embeds"],
        Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent, CallbackOnStepEnd = onStep,
    };

    /// <summary>Runs the case as the script does: latents (checked after every step), then the decoded image.</summary>
    private void Check<T>(Func<T, StableDiffusion3Output> generate, T request, string name, string embeds, long seed) where T : StableDiffusion3Request
    {
        int steps = 0;
        using (var latents = generate(Prepared(request, embeds, seed, c => { Close(c.Latents, $"{name}.step{c.Step}.latents"); steps++; })))
            Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(Expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        using var image = generate(Prepared(request, embeds, seed, null) with { OutputType = OutputType.Numpy });
        Close(image.Tensor!, $"{name}.image");
    }

    [Theory]
    [InlineData("t2i", "t2i", 4, 4.5, 64, 64, 123456L)]
    [InlineData("t2i_nocfg", "t2i_nocfg", 3, 1.0, 64, 80, 7L)]
    public void TextToImageMatchesDiffusers(string name, string embeds, int steps, double guidance, int height, int width, long seed)
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        Check(r => pipe.Generate(r), new StableDiffusion3Request { NumInferenceSteps = steps, GuidanceScale = guidance, Height = height, Width = width },
            name, embeds, seed);
    }

    [Fact]
    public void SkipLayerGuidanceMatchesDiffusers()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        Check(r => pipe.Generate(r), new StableDiffusion3Request
        {
            NumInferenceSteps = 4, GuidanceScale = 4.5, Height = 64, Width = 64, SkipGuidanceLayers = [1], SkipLayerGuidanceScale = 2.8,
            SkipLayerGuidanceStart = 0.01, SkipLayerGuidanceStop = 0.6,
        }, "t2i_slg", "t2i", 99);
    }

    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        using var pipe = new StableDiffusion3Img2ImgPipeline(TinySd3Pipeline.Shared);
        Check(r => pipe.Generate(r), new StableDiffusion3Img2ImgRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Strength = 0.7, NumInferenceSteps = 10, GuidanceScale = 7.0,
        }, "i2i", "t2i", 123456);
    }

    [Fact]
    public void InpaintingMatchesDiffusers()
    {
        using var pipe = new StableDiffusion3InpaintPipeline(TinySd3Pipeline.Shared);
        Check(r => pipe.Generate(r), new StableDiffusion3InpaintRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
            Strength = 0.99, NumInferenceSteps = 5, GuidanceScale = 7.0,
        }, "inpaint", "t2i", 42);
    }
}
