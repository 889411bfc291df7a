using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>Flux Fill and Kontext: diffusers' sizing rules, defaults and the requests refused before any compute.</summary>
public sealed class FluxFillKontextTests
{
    [Theory]
    [InlineData(1024, 1024, 1024 * 1024, 1024, 1024)]
    [InlineData(48, 64, 48 * 64, 48, 64)]
    [InlineData(50, 70, 4000, 48, 64)] // 53.45 -> 53 -> 48, 74.83 -> 75 -> 64
    [InlineData(1024, 1024, 64 * 64, 64, 64)]
    [InlineData(768, 1360, 1024 * 1024, 768, 1360)] // round(770.6) = 771 -> 768, round(1360.3) = 1360
    public void KontextOutputSizeIsMaxAreaAtTheRequestedAspect(int height, int width, int maxArea, int expectedH, int expectedW) =>
        Assert.Equal((expectedH, expectedW), FluxKontextPipeline.OutputSize(height, width, maxArea));

    [Theory]
    [InlineData(40, 64, true, 720, 1456)] // floored to 64 x 32 first: aspect 2, not 1.6 (which is 1328 x 800)
    [InlineData(64, 64, true, 1024, 1024)]
    [InlineData(1000, 600, true, 1328, 800)] // 592 / 992 = 0.597 (floored): 800 / 1328 = 0.602 (checked with diffusers' list in Python)
    [InlineData(4000, 100, true, 1568, 672)] // the narrowest preferred resolution
    [InlineData(40, 64, false, 32, 64)]
    [InlineData(70, 90, false, 64, 80)]
    public void KontextInputImageSizeFollowsDiffusers(int imageH, int imageW, bool autoResize, int expectedH, int expectedW) =>
        Assert.Equal((expectedH, expectedW), FluxKontextPipeline.InputImageSize(imageH, imageW, autoResize));

    [Fact]
    public void PreferredResolutionsAreDiffusersList()
    {
        var list = FluxKontextPipeline.PreferredResolutions;
        Assert.Equal(17, list.Count);
        Assert.Equal((1024, 1024), list[8]);
        Assert.All(list, r => Assert.True(r.Width % 16 == 0 && r.Height % 16 == 0));
        Assert.Equal(list.Select(r => (r.Height, r.Width)).Reverse(), list.Select(r => (r.Width, r.Height)));
    }

    [Fact]
    public void FillDefaultsAreDiffusersAndItsSchedulerRuns50Steps()
    {
        var request = new FluxFillRequest();
        Assert.Equal((30.0, 1.0, null), (request.GuidanceScale, request.Strength, request.NumInferenceSteps));
        using var components = LocalDiffusersFlux.Components("local-diffusers/flux-fill/transformer");
        using var pipe = new FluxFillPipeline(components);
        Assert.Equal(50, pipe.DefaultStepCount);
        int total = 0;
        using var output = pipe.Generate(request with
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
            PromptEmbeds = randn(1, 4, 96), PooledPromptEmbeds = randn(1, 32), Height = 32, Width = 32, OutputType = OutputType.Latent,
            Generator = new Generator("cpu").ManualSeed(1), CallbackOnStepEnd = c => { total = c.TotalSteps; c.Interrupt = true; },
        });
        Assert.Equal(50, total);
    }

    [Fact]
    public void InvalidFillAndKontextRequestsAreRejectedBeforeCompute()
    {
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
        var mask = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png"));
        using var embeds = zeros(1, 4, 96);
        using var pooled = zeros(1, 32);
        var fill = new FluxFillRequest { Image = image, MaskImage = mask, PromptEmbeds = embeds, PooledPromptEmbeds = pooled, Height = 32, Width = 32 };
        using (var standard = LocalDiffusersFlux.Components())
        using (var wrong = new FluxFillPipeline(standard))
            Assert.Contains("in_channels 384", Assert.Throws<ArgumentException>(() => wrong.Generate(fill)).Message);
        using (var components = LocalDiffusersFlux.Components("local-diffusers/flux-fill/transformer"))
        using (var pipe = new FluxFillPipeline(components))
        {
            Assert.Contains("mask_image", Assert.Throws<ArgumentException>(() => pipe.Generate(fill with { MaskImage = null })).Message);
            Assert.Contains("image is required", Assert.Throws<ArgumentException>(() => pipe.Generate(fill with { Image = null })).Message);
            Assert.Contains("true CFG", Assert.Throws<ArgumentException>(() => pipe.Generate(fill with { TrueCfgScale = 2, NegativePromptEmbeds = embeds, NegativePooledPromptEmbeds = pooled })).Message);
            Assert.Contains("strength", Assert.Throws<ArgumentException>(() => pipe.Generate(fill with { Strength = 1.5 })).Message);
            Assert.Contains("latents", Assert.Throws<ArgumentException>(() => pipe.Generate(fill with { Latents = embeds })).Message);
        }
        using (var components = LocalDiffusersFlux.Components("local-diffusers/flux-kontext/transformer"))
        using (var pipe = new FluxKontextPipeline(components))
        {
            var kontext = new FluxKontextRequest { Image = image, PromptEmbeds = embeds, PooledPromptEmbeds = pooled };
            Assert.Contains("max_area", Assert.Throws<ArgumentException>(() => pipe.Generate(kontext with { MaxArea = 100 })).Message);
            Assert.Contains("raise max_area", Assert.Throws<ArgumentException>(() => pipe.Generate(kontext with { MaxArea = 300, Height = 16, Width = 64 })).Message);
            Assert.Contains("at least 16 pixels", Assert.Throws<ArgumentException>(() => pipe.Generate(kontext with { Image = image.Resize(12, 40), MaxArea = 32 * 32 })).Message);
            Assert.Contains("latents", Assert.Throws<ArgumentException>(() => pipe.Generate(kontext with { Latents = embeds, MaxArea = 32 * 32 })).Message);
        }
    }
}
