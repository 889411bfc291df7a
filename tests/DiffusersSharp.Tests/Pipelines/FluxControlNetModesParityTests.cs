using DiffusersSharp.Images;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>The tiny Flux pipeline (local-diffusers/flux) with the ControlNets of local-diffusers/flux-controlnet (one
/// double- and one single-stream block) and local-diffusers/flux-controlnet-modes/controlnet2 (two of each).</summary>
public sealed class LocalDiffusersFluxControlNets : IDisposable
{
    /// <summary>The first ControlNet.</summary>
    public const string First = "local-diffusers/flux-controlnet/controlnet";

    /// <summary>The second ControlNet.</summary>
    public const string Second = "local-diffusers/flux-controlnet-modes/controlnet2";

    /// <summary>The first ControlNet alone.</summary>
    public FluxComponents Single { get; } = LocalDiffusersFlux.Components(controlNet: First);

    /// <summary>Both, first then second.</summary>
    public FluxComponents Multi { get; } = LocalDiffusersFlux.Components(controlNets: [First, Second]);

    /// <summary>Both, second then first.</summary>
    public FluxComponents Reversed { get; } = LocalDiffusersFlux.Components(controlNets: [Second, First]);

    /// <inheritdoc />
    public void Dispose()
    {
        Single.Dispose();
        Multi.Dispose();
        Reversed.Dispose();
    }
}

/// <summary>
/// Several Flux ControlNets (diffusers' FluxMultiControlNetModel) and the Flux ControlNet image-to-image and inpainting
/// pipelines against diffusers 0.36.0's own runs (fixture local-diffusers/flux-controlnet-modes, made by
/// tools/reference/flux_controlnet_modes.py on torch 1.13 CPU, float32; its README says how), given local-diffusers/flux's
/// prompt embeddings. The two ControlNets have one and two blocks of each kind, so diffusers' sum (a zip) keeps one
/// residual of each kind, also on a step where only the two-block ControlNet runs; true CFG takes the positive residuals
/// in both passes. Every step's latents, the final latents and the decoded image are compared.
/// Measured (worst step latents = final latents here, of max |latents|; image): multi 1.7e-6 of 3.7, 3.2e-6; i2i 3.1e-6
/// of 2.7, 4.1e-6; i2i_multi 3.2e-6 of 4.0, 4.1e-6; inpaint 1.4e-5 of 7.9, 3.8e-6; inpaint_multi 5.7e-6 of 7.2, 5.1e-6
/// (at most 1.8e-6 of the latents' size, as the plain Flux inpainting's 7.2e-6 of 5.9). The bound is the Flux tests'
/// 1e-5 x max(1, max |expected|), about 2x above the worst image error.
/// </summary>
public sealed class FluxControlNetModesParityTests(LocalDiffusersFluxControlNets models, ITestOutputHelper output) : IClassFixture<LocalDiffusersFluxControlNets>
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/flux-controlnet-modes/expected.safetensors");
    private static readonly Dictionary<string, Tensor> Flux = Fixtures.Expected("local-diffusers/flux/expected.safetensors");
    private static readonly ImageBuffer Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png"));
    private static readonly ImageBuffer Control2 = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/flux-controlnet-modes/control2.png"));

    /// <summary>
    /// Runs case <paramref name="name"/> twice, as the script does: the latents (every step checked), then the decoded
    /// image; writes the measured errors.
    /// </summary>
    private void Check<T>(string name, T request, long seed, Func<T, FluxOutput> generate) where T : FluxRequest =>
        FluxParity.Check(generate, request with { PromptEmbeds = Flux["in.prompt_embeds"], PooledPromptEmbeds = Flux["in.pooled"] },
            Expected, name, seed, Tolerance, output);

    /// <summary>Two ControlNets at 64 x 80, scales 0.6 / 0.9, windows [0, 0.75] / [0.25, 1] over 4 steps, true CFG 2.0.</summary>
    [Fact]
    public void TwoControlNetsWithTrueCfgMatchDiffusers()
    {
        using var pipe = new FluxControlNetPipeline(models.Multi);
        Check("multi", new FluxControlNetRequest
        {
            ControlImages = [Image, Control2], Height = 64, Width = 80, NumInferenceSteps = 4, GuidanceScale = 3.5,
            ControlNetConditioningScales = [0.6, 0.9], ControlGuidanceStarts = [0.0, 0.25], ControlGuidanceEnds = [0.75, 1.0],
            TrueCfgScale = 2.0, NegativePromptEmbeds = Flux["in.neg_prompt_embeds"], NegativePooledPromptEmbeds = Flux["in.neg_pooled"],
        }, 42, r => pipe.Generate(r));
    }

    /// <summary>Image-to-image, one ControlNet: strength 0.6 of 5 steps, scale 0.8, the ControlNet off on the last step.</summary>
    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        using var pipe = new FluxControlNetImg2ImgPipeline(models.Single);
        Check("i2i", new FluxControlNetImg2ImgRequest
        {
            Image = Image, ControlImage = Control2, Height = 64, Width = 64, Strength = 0.6, NumInferenceSteps = 5,
            ControlNetConditioningScale = 0.8, ControlGuidanceEnd = 0.67,
        }, 7, r => pipe.Generate(r));
    }

    /// <summary>Image-to-image, two ControlNets, 64 x 80 (the image resized), strength 0.8 of 4 steps, scales 0.5 / 1.0.</summary>
    [Fact]
    public void ImageToImageWithTwoControlNetsMatchesDiffusers()
    {
        using var pipe = new FluxControlNetImg2ImgPipeline(models.Multi);
        Check("i2i_multi", new FluxControlNetImg2ImgRequest
        {
            Image = Image, ControlImages = [Image, Control2], Height = 64, Width = 80, Strength = 0.8, NumInferenceSteps = 4,
            ControlNetConditioningScales = [0.5, 1.0],
        }, 11, r => pipe.Generate(r));
    }

    /// <summary>Inpainting, one ControlNet: strength 0.8 of 5 steps, guidance 5, scale 0.7.</summary>
    [Fact]
    public void InpaintingMatchesDiffusers()
    {
        using var pipe = new FluxControlNetInpaintPipeline(models.Single);
        Check("inpaint", new FluxControlNetInpaintRequest
        {
            Image = Image, MaskImage = Mask, ControlImage = Control2, Height = 64, Width = 64, Strength = 0.8, NumInferenceSteps = 5,
            GuidanceScale = 5.0, ControlNetConditioningScale = 0.7,
        }, 5, r => pipe.Generate(r));
    }

    /// <summary>Inpainting, the two ControlNets the other way round, with the defaults (strength 0.6, one scale 1.0 for both) over 5 steps.</summary>
    [Fact]
    public void InpaintingWithTwoControlNetsMatchesDiffusers()
    {
        using var pipe = new FluxControlNetInpaintPipeline(models.Reversed);
        Check("inpaint_multi", new FluxControlNetInpaintRequest
        {
            Image = Image, MaskImage = Mask, ControlImages = [Control2, Image], Height = 64, Width = 64, NumInferenceSteps = 5,
        }, 3, r => pipe.Generate(r));
    }

    [Fact]
    public void SeveralControlNetsAreListedInOrderWithoutASingleOne()
    {
        Assert.Null(models.Multi.ControlNet);
        Assert.Equal(2, models.Multi.ControlNets.Count);
        Assert.Equal(1, models.Multi.ControlNets[0].Config.NumLayers);
        Assert.Equal(2, models.Reversed.ControlNets[0].Config.NumLayers);
        Assert.Same(models.Single.ControlNets[0], models.Single.ControlNet);
    }

    [Fact]
    public void BadControlNetRequestsAreRefusedBeforeAnyCompute()
    {
        using var multi = new FluxControlNetPipeline(models.Multi);
        using var img2img = new FluxControlNetImg2ImgPipeline(models.Single);
        using var inpaint = new FluxControlNetInpaintPipeline(models.Single);
        var prompt = new FluxControlNetRequest { PromptEmbeds = Flux["in.prompt_embeds"], PooledPromptEmbeds = Flux["in.pooled"], Height = 64, Width = 64 };
        using var generator = new Generator("cpu").ManualSeed(1);
        var count = Assert.Throws<ArgumentException>(() => multi.Generate(prompt with { ControlImage = Image, Generator = generator }));
        Assert.Contains("2 ControlNet(s) take 2 control image(s)", count.Message);
        var scales = Assert.Throws<ArgumentException>(() => multi.Generate(prompt with { ControlImages = [Image, Image], ControlNetConditioningScales = [1.0] }));
        Assert.Contains("controlnet_conditioning_scale has 1 element(s)", scales.Message);
        var window = Assert.Throws<ArgumentException>(() => multi.Generate(prompt with { ControlImages = [Image, Image], ControlGuidanceStarts = [0.5, 0.9], ControlGuidanceEnd = 0.8 }));
        Assert.Contains("cannot be larger or equal", window.Message);
        using var wrongSize = zeros(1, 3, 32, 32);
        var tensor = Assert.Throws<ArgumentException>(() => multi.Generate(prompt with { ControlImages = [Image, PipelineImage.FromTensor(wrongSize)] }));
        Assert.Contains("output size 64x64", tensor.Message);
        var i2iRequest = new FluxControlNetImg2ImgRequest
        {
            PromptEmbeds = Flux["in.prompt_embeds"], PooledPromptEmbeds = Flux["in.pooled"], Image = Image, ControlImage = Image, Height = 64, Width = 64,
        };
        var trueCfg = Assert.Throws<ArgumentException>(() => img2img.Generate(i2iRequest with
        {
            TrueCfgScale = 2, NegativePromptEmbeds = Flux["in.neg_prompt_embeds"], NegativePooledPromptEmbeds = Flux["in.neg_pooled"],
        }));
        Assert.Contains("FluxControlNetImg2ImgPipeline", trueCfg.Message);
        var inpaintRequest = new FluxControlNetInpaintRequest
        {
            PromptEmbeds = Flux["in.prompt_embeds"], PooledPromptEmbeds = Flux["in.pooled"], Image = Image, MaskImage = Mask, Height = 64, Width = 64,
        };
        Assert.Contains("control image", Assert.Throws<ArgumentException>(() => inpaint.Generate(inpaintRequest)).Message);
        Assert.Contains("FluxControlNetInpaintPipeline", Assert.Throws<ArgumentException>(() => inpaint.Generate(inpaintRequest with
        {
            ControlImage = Image, NegativePrompt = "blurry",
        })).Message);
        Assert.Contains("strength", Assert.Throws<ArgumentException>(() => inpaint.Generate(inpaintRequest with { ControlImage = Image, Strength = 1.5 })).Message);
        using var fresh = new Generator("cpu").ManualSeed(1);
        using var next = generator.Randn([4], ScalarType.Float32, CPU);
        using var first = fresh.Randn([4], ScalarType.Float32, CPU);
        Assert.Equal(first.data<float>().ToArray(), next.data<float>().ToArray()); // nothing drew from the request's generator
    }

    [Fact]
    public void PipelinesWithoutAControlNetAndControlNetsOfTwoGuidanceKindsAreRefused()
    {
        using var plain = LocalDiffusersFlux.Components();
        Assert.Contains("FluxControlNetImg2ImgPipeline needs components with a ControlNet", Assert.Throws<ArgumentException>(() => new FluxControlNetImg2ImgPipeline(plain)).Message);
        Assert.Contains("FluxControlNetInpaintPipeline needs components with a ControlNet", Assert.Throws<ArgumentException>(() => new FluxControlNetInpaintPipeline(plain)).Message);
        var config = models.Single.ControlNets[0].Config with { GuidanceEmbeds = false };
        using var unguided = new FluxControlNetModel(config);
        var kinds = Assert.Throws<ArgumentException>(() => FluxComponents.CheckControlNets([models.Single.ControlNets[0], unguided], plain.Transformer));
        Assert.Contains("guidance_embeds", kinds.Message);
        FluxComponents.CheckControlNets([unguided], plain.Transformer); // alone it fits
    }
}
