using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sdxl with the tiny ControlNet-Union of local-diffusers/controlnet-union, alone and twice.</summary>
public sealed class LocalDiffusersControlNetUnion : IDisposable
{
    /// <summary>The tiny ControlNet-Union's folder.</summary>
    public static readonly string Union = Fixtures.Path("local-diffusers/controlnet-union/union");

    /// <summary>Loads both sets.</summary>
    public LocalDiffusersControlNetUnion()
    {
        Single = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions(), Union);
        Multi = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions(), [Union, Union]);
    }

    /// <summary>tiny-sdxl + the ControlNet-Union.</summary>
    public StableDiffusionComponents Single { get; }

    /// <summary>tiny-sdxl + the ControlNet-Union twice (diffusers' <c>MultiControlNetUnionModel([cn, cn])</c>).</summary>
    public StableDiffusionComponents Multi { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Single.Dispose();
        Multi.Dispose();
    }
}

/// <summary>
/// The SDXL ControlNet-Union pipelines against diffusers v0.36.0's own <c>StableDiffusionXLControlNetUnionPipeline</c>,
/// <c>...Img2ImgPipeline</c> and <c>...InpaintPipeline</c> on tiny-sdxl with a tiny ControlNet-Union (fixture
/// local-diffusers/controlnet-union, made on this project's machine by tools/reference/controlnet_union.py; see its
/// README). Prompt and pooled embeddings are the fixture's random inputs (no CLIP ran in Python). Float32 on the CPU;
/// every step's latents, the final latents and the decoded image are compared, and the timesteps exactly. Measured (max
/// |diff| over the steps' latents, of the final latents' magnitude; image): see the README's table; at most 1.0e-6 of the
/// latents' magnitude. The bound is the ControlNet tests' 1e-5 x max(1, max |expected|).
/// </summary>
public sealed class ControlNetUnionParityTests(LocalDiffusersControlNetUnion models, ITestOutputHelper output) : IClassFixture<LocalDiffusersControlNetUnion>
{
    private const double Tolerance = 1e-5;
    private const string Folder = "local-diffusers/controlnet-union/";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "expected.safetensors");
    private static readonly ImageBuffer Control = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png"));
    private static readonly ImageBuffer Control2 = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet-modes/control2.png"));
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet-modes/init.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("local-diffusers/controlnet-modes/mask.png"));
    private static readonly ImageBuffer Repaint = ImageFile.LoadRgb(Fixtures.Path(Folder + "repaint.png"));

    private static T Embeds<T>(T r) where T : StableDiffusionRequest => r with
    {
        PromptEmbeds = Expected["in.prompt_embeds"], PooledPromptEmbeds = Expected["in.pooled"],
        NegativePromptEmbeds = Expected["in.neg_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.neg_pooled"],
    };

    private void Check<T>(string name, T request, long seed, Func<T, StableDiffusionPipelineOutput> generate) where T : StableDiffusionRequest =>
        StepParity.Check(output, Expected, Tolerance, name, request, seed, generate);

    /// <summary>One condition (canny mode), scale 0.7, the control image's size (80 x 64).</summary>
    [Fact]
    public void OneModeMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetUnionPipeline(models.Single);
        Check("t2i", Embeds(new StableDiffusionControlNetUnionRequest
        {
            ControlImages = [Control], ControlModes = [ControlNetUnionMode.Canny], NumInferenceSteps = 8, ControlNetConditioningScale = 0.7,
        }), 31, r => pipe.Generate(r));
    }

    /// <summary>Two conditions fused by the one model (canny, depth) with a scale and a guidance window each, 10 steps.</summary>
    [Fact]
    public void TwoModesWithGuidanceWindowsMatchDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetUnionPipeline(models.Single);
        Check("t2i_two", Embeds(new StableDiffusionControlNetUnionRequest
        {
            ControlImages = [Control, Control2], ControlModes = [3, 1], NumInferenceSteps = 10,
            ControlNetConditioningScales = [0.6, 1.1], ControlGuidanceStarts = [0.0, 0.3], ControlGuidanceEnds = [0.7, 1.0],
        }), 32, r => pipe.Generate(r));
    }

    /// <summary>Guess mode without guidance (guidance 1), two conditions, scale 0.9 for both, 6 steps.</summary>
    [Fact]
    public void GuessModeWithoutGuidanceMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetUnionPipeline(models.Single);
        Check("t2i_guess", Embeds(new StableDiffusionControlNetUnionRequest
        {
            ControlImages = [Control, Control2], ControlModes = [3, 1], NumInferenceSteps = 6, GuidanceScale = 1.0, GuessMode = true,
            ControlNetConditioningScale = 0.9,
        }), 33, r => pipe.Generate(r));
    }

    /// <summary>Two ControlNet-Unions (the same one twice), one image and mode each, scales and windows per model.</summary>
    [Fact]
    public void TwoControlNetUnionsMatchDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetUnionPipeline(models.Multi);
        Check("t2i_multi", Embeds(new StableDiffusionControlNetUnionRequest
        {
            ControlImages = [Control, Control2], ControlModes = [3, 1], NumInferenceSteps = 8,
            ControlNetConditioningScales = [0.5, 0.9], ControlGuidanceStarts = [0.0, 0.2], ControlGuidanceEnds = [0.8, 1.0],
        }), 34, r => pipe.Generate(r));
    }

    /// <summary>Image-to-image in tile mode (the start image as the control image), strength 0.6 of 10 steps, default scale 0.8.</summary>
    [Fact]
    public void Img2ImgMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetUnionImg2ImgPipeline(models.Single);
        Check("img2img", Embeds(new StableDiffusionControlNetUnionImg2ImgRequest
        {
            Image = Init, ControlImage = Init, ControlMode = ControlNetUnionMode.Tile, Strength = 0.6, NumInferenceSteps = 10,
        }), 41, r => pipe.Generate(r));
    }

    /// <summary>Inpainting in repaint mode with the defaults (strength 0.9999: 7 of 8 steps); then repaint + canny at strength
    /// 0.7 of 10 steps with windows [0.1, 0.9] and [0.1, 0.6] (the first step runs with both scales 0: the model still runs
    /// and its residuals, unscaled with two conditions, still steer).</summary>
    [Fact]
    public void InpaintMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetUnionInpaintPipeline(models.Single);
        Check("inpaint", Embeds(new StableDiffusionControlNetUnionInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImages = [Repaint], ControlModes = [ControlNetUnionMode.Repaint], NumInferenceSteps = 8,
        }), 51, r => pipe.Generate(r));
        Check("inpaint_two", Embeds(new StableDiffusionControlNetUnionInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImages = [Repaint, Control], ControlModes = [7, 3], Strength = 0.7, NumInferenceSteps = 10,
            ControlNetConditioningScales = [1.0, 0.5], ControlGuidanceStart = 0.1, ControlGuidanceEnds = [0.9, 0.6],
        }), 52, r => pipe.Generate(r));
    }

    /// <summary>diffusers' defaults per pipeline, and what diffusers' union pipelines refuse or cannot run, refused before any compute.</summary>
    [Fact]
    public void DefaultsAndBadInputsFollowDiffusers()
    {
        using var t2i = new StableDiffusionXLControlNetUnionPipeline(models.Single);
        using var img2img = new StableDiffusionXLControlNetUnionImg2ImgPipeline(models.Single);
        using var inpaint = new StableDiffusionXLControlNetUnionInpaintPipeline(models.Single);
        using var multi = new StableDiffusionXLControlNetUnionPipeline(models.Multi);
        var r = Embeds(new StableDiffusionControlNetUnionRequest { ControlImages = [Control], ControlModes = [3], NumInferenceSteps = 2 });
        var i2i = Embeds(new StableDiffusionControlNetUnionImg2ImgRequest { Image = Init, ControlImage = Init, ControlMode = 6, NumInferenceSteps = 2 });
        var inp = Embeds(new StableDiffusionControlNetUnionInpaintRequest { Image = Init, MaskImage = Mask, ControlImage = Repaint, ControlMode = 7, NumInferenceSteps = 2 });
        Assert.Equal(0.8, img2img.StrengthOf(i2i));
        Assert.Equal(0.8, i2i.ControlNetConditioningScale);
        Assert.Equal(0.9999, inpaint.StrengthOf(inp));
        Assert.Equal(1.0, inp.ControlNetConditioningScale);
        Assert.Equal(5.0, t2i.GuidanceOf(r));
        string Fails(Action run) => Assert.Throws<ArgumentException>(run).Message;
        Assert.Contains("control_mode is required", Fails(() => t2i.Generate(r with { ControlModes = null })));
        Assert.Contains("padding_mask_crop is not supported with ControlNet-Union", Fails(() => inpaint.Generate(inp with { PaddingMaskCrop = 8 })));
        Assert.Contains("control_image (the control images) is required", Fails(() => t2i.Generate(r with { ControlImages = null })));
        Assert.Contains("len(control_image) == len(control_mode)", Fails(() => t2i.Generate(r with { ControlModes = [3, 1] })));
        Assert.Contains("must be lower than 8", Fails(() => t2i.Generate(r with { ControlModes = [8] })));
        Assert.Contains("not negative, got -1", Fails(() => t2i.Generate(r with { ControlModes = [-1] })));
        Assert.Contains("not both", Fails(() => t2i.Generate(r with { ControlMode = 3 })));
        Assert.Contains("controlnet_conditioning_scale has 2 element(s) but there are 1 control image(s)",
            Fails(() => t2i.Generate(r with { ControlNetConditioningScales = [1.0, 0.5] })));
        Assert.Contains("control_guidance_end has 1 element(s) but there are 2 ControlNet-Unions",
            Fails(() => multi.Generate(r with { ControlImages = [Control, Control2], ControlModes = [3, 1], ControlGuidanceEnds = [0.5] })));
        Assert.Contains("2 ControlNet-Unions take one control image and one control_mode each",
            Fails(() => multi.Generate(r with { ControlImages = [Control, Control2, Control], ControlModes = [3, 1, 2] })));
        Assert.Contains("control guidance start: 0.5 cannot be larger or equal to control guidance end: 0.5",
            Fails(() => t2i.Generate(r with { ControlGuidanceStart = 0.5, ControlGuidanceEnd = 0.5 })));
        Assert.Contains("Guess mode", Fails(() => t2i.Generate(r with { GuessMode = true })));
        Assert.Contains("denoising_start is not a parameter", Fails(() => img2img.Generate(i2i with { DenoisingStart = 0.5 })));
        Assert.Contains("negative_original_size", Fails(() => inpaint.Generate(inp with { NegativeOriginalSize = (64, 64) })));
        // The plain ControlNet pipelines refuse ControlNet-Union components and the other way round.
        Assert.Contains("hold ControlNet-Unions", Assert.Throws<ArgumentException>(() => new StableDiffusionXLControlNetPipeline(models.Single)).Message);
        using var plain = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions(),
            Fixtures.Path("local-diffusers/controlnet/sdxl"));
        Assert.Contains("hold plain ControlNets", Assert.Throws<ArgumentException>(() => new StableDiffusionXLControlNetUnionPipeline(plain)).Message);
    }

    /// <summary>Loading refuses a mix of ControlNet kinds and ControlNet-Unions beside a model that is not SDXL, before any weights load.</summary>
    [Fact]
    public void LoadingRefusesMixedKindsAndNonSdxlModels()
    {
        var options = new PipelineLoadOptions();
        var e = Assert.Throws<ArgumentException>(() => StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), options,
            [LocalDiffusersControlNetUnion.Union, Fixtures.Path("local-diffusers/controlnet/sdxl")]));
        Assert.Contains("mix ControlNet-Union models with plain ControlNets", e.Message);
        e = Assert.Throws<ArgumentException>(() => StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), options, LocalDiffusersControlNetUnion.Union));
        Assert.Contains("ControlNet-Union models steer SDXL", e.Message);
        Assert.Equal(ControlNetUnionMode.Canny, ControlNetUnionMode.Parse("anime_lineart"));
        Assert.Equal(ControlNetUnionMode.Hed, ControlNetUnionMode.Parse("Scribble"));
        Assert.Equal(5, ControlNetUnionMode.Parse("5"));
        Assert.Throws<ArgumentException>(() => ControlNetUnionMode.Parse("pose"));
        Assert.Throws<ArgumentException>(() => ControlNetUnionMode.Parse("-1"));
    }
}
