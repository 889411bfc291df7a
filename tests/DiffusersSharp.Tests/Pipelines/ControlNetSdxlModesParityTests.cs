using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sdxl with the tiny SDXL ControlNet of local-diffusers/controlnet, alone and twice (two ControlNets).</summary>
public sealed class LocalDiffusersControlNetSdxlModes : IDisposable
{
    private static readonly string ControlNet = Fixtures.Path("local-diffusers/controlnet/sdxl");

    /// <summary>Loads both sets.</summary>
    public LocalDiffusersControlNetSdxlModes()
    {
        Single = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions(), ControlNet);
        Multi = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions(), [ControlNet, ControlNet]);
    }

    /// <summary>tiny-sdxl + the ControlNet.</summary>
    public StableDiffusionComponents Single { get; }

    /// <summary>tiny-sdxl + the ControlNet twice (as diffusers' <c>MultiControlNetModel([cn, cn])</c>).</summary>
    public StableDiffusionComponents Multi { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Single.Dispose();
        Multi.Dispose();
    }
}

/// <summary>
/// The SDXL ControlNet image-to-image and inpainting pipelines against diffusers v0.36.0's own
/// <c>StableDiffusionXLControlNetImg2ImgPipeline</c> / <c>StableDiffusionXLControlNetInpaintPipeline</c> on tiny-sdxl
/// (fixture local-diffusers/controlnet-sdxl-modes, made on this project's machine by
/// tools/reference/controlnet_sdxl_modes.py; see its README). Prompt and pooled embeddings are the fixture's random
/// inputs (no CLIP ran in Python). Float32 on the CPU; every step's latents, the final latents and the decoded image are
/// compared, and the timesteps exactly. Measured (max |diff| over the steps' latents, then the image): img2img 3.6e-6 on
/// final latents of 5.5, 1.1e-6; img2img_multi 4.9e-6 on 5.3, 1.9e-6; inpaint 9.5e-6 on 12.6, 1.5e-6; inpaint_strength
/// 4.6e-6 on 7.2, 1.9e-6: at most 9.3e-7 of the latents' size. The bound is the ControlNet tests' 1e-5 x max(1, max |expected|).
/// </summary>
public sealed class ControlNetSdxlModesParityTests(LocalDiffusersControlNetSdxlModes models, ITestOutputHelper output)
    : IClassFixture<LocalDiffusersControlNetSdxlModes>
{
    private const double Tolerance = 1e-5;
    private const string Folder = "local-diffusers/controlnet-sdxl-modes/";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "expected.safetensors");
    private static readonly ImageBuffer Control = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png"));
    private static readonly ImageBuffer Control2 = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet-modes/control2.png"));
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet-modes/init.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("local-diffusers/controlnet-modes/mask.png"));


    private static T Embeds<T>(T r) where T : StableDiffusionRequest => r with
    {
        PromptEmbeds = Expected["in.prompt_embeds"], PooledPromptEmbeds = Expected["in.pooled"],
        NegativePromptEmbeds = Expected["in.neg_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.neg_pooled"],
    };

    private void Check<T>(string name, T request, long seed, Func<T, StableDiffusionPipelineOutput> generate) where T : StableDiffusionRequest =>
        StepParity.Check(output, Expected, Tolerance, name, request, seed, generate);

    /// <summary>strength 0.6 of 10 steps (6 run), the default scale (0.8), the image's size (80 x 64).</summary>
    [Fact]
    public void Img2ImgMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetImg2ImgPipeline(models.Single);
        Check("img2img", Embeds(new StableDiffusionControlNetImg2ImgRequest
        {
            Image = Init, ControlImage = Control, Strength = 0.6, NumInferenceSteps = 10,
        }), 71, r => pipe.Generate(r));
    }

    /// <summary>Two ControlNets (the same one twice) with per-ControlNet scales and windows, strength 0.6 of 10 steps.</summary>
    [Fact]
    public void Img2ImgWithTwoControlNetsMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetImg2ImgPipeline(models.Multi);
        Check("img2img_multi", Embeds(new StableDiffusionControlNetImg2ImgRequest
        {
            Image = Init, ControlImages = [Control, Control2], Strength = 0.6, NumInferenceSteps = 10,
            ControlNetConditioningScales = [0.5, 0.9], ControlGuidanceStarts = [0.0, 0.3], ControlGuidanceEnds = [0.7, 1.0],
        }), 72, r => pipe.Generate(r));
    }

    /// <summary>The defaults (strength 0.9999: 7 of 8 steps, scale 1.0, the image's size); then strength 0.7 of 10 steps,
    /// scale 0.9 in the window [0.2, 0.8] of the steps run.</summary>
    [Fact]
    public void InpaintMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetInpaintPipeline(models.Single);
        Check("inpaint", Embeds(new StableDiffusionControlNetInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImage = Control, NumInferenceSteps = 8,
        }), 81, r => pipe.Generate(r));
        Check("inpaint_strength", Embeds(new StableDiffusionControlNetInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImage = Control, Strength = 0.7, NumInferenceSteps = 10,
            ControlNetConditioningScale = 0.9, ControlGuidanceStart = 0.2, ControlGuidanceEnd = 0.8,
        }), 82, r => pipe.Generate(r));
    }

    /// <summary>diffusers' defaults per pipeline, and the parameters the SDXL ControlNet pipelines lack, refused before any compute.</summary>
    [Fact]
    public void DefaultsAndMissingParametersFollowDiffusers()
    {
        using var img2img = new StableDiffusionXLControlNetImg2ImgPipeline(models.Single);
        using var inpaint = new StableDiffusionXLControlNetInpaintPipeline(models.Single);
        var i2i = Embeds(new StableDiffusionControlNetImg2ImgRequest { Image = Init, ControlImage = Control, NumInferenceSteps = 2 });
        var inp = Embeds(new StableDiffusionControlNetInpaintRequest { Image = Init, MaskImage = Mask, ControlImage = Control, NumInferenceSteps = 2 });
        Assert.Equal(0.8, img2img.StrengthOf(i2i));
        Assert.Equal(0.9999, inpaint.StrengthOf(inp));
        Assert.Equal(5.0, img2img.GuidanceOf(i2i));
        string Fails(Action run) => Assert.Throws<ArgumentException>(run).Message;
        Assert.Contains("denoising_start is not a parameter", Fails(() => img2img.Generate(i2i with { DenoisingStart = 0.5 })));
        Assert.Contains("denoising_end is not a parameter", Fails(() => img2img.Generate(i2i with { DenoisingEnd = 0.5 })));
        Assert.Contains("guidance_rescale is not a parameter", Fails(() => img2img.Generate(i2i with { GuidanceRescale = 0.5 })));
        Assert.Contains("negative_original_size", Fails(() => inpaint.Generate(inp with { NegativeOriginalSize = (64, 64) })));
        Assert.Contains("negative_original_size", Fails(() => inpaint.Generate(inp with { NegativeCropsCoordsTopLeft = (1, 1) })));
        Assert.Contains("control_image (the control image) is required", Fails(() => inpaint.Generate(inp with { ControlImage = null })));
        // The SD 1.x / 2.x twins refuse SDXL components, and the plain SDXL pipelines refuse ControlNet requests.
        Assert.Contains("SDXL model", Assert.Throws<ArgumentException>(() => new StableDiffusionControlNetInpaintPipeline(models.Single)).Message);
        using var plain = new StableDiffusionXLImg2ImgPipeline(models.Single);
        Assert.Contains("takes a StableDiffusionImg2ImgRequest", Fails(() => plain.Generate(i2i)));
    }
}
