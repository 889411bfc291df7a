using DiffusersSharp.Images;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sd15 with two ControlNets (local-diffusers/controlnet/sd15 and local-diffusers/controlnet-modes/sd15b),
/// and with the first alone.</summary>
public sealed class LocalDiffusersControlNetModes : IDisposable
{
    /// <summary>The first ControlNet.</summary>
    public static readonly string First = Fixtures.Path("local-diffusers/controlnet/sd15");

    /// <summary>The second ControlNet.</summary>
    public static readonly string Second = Fixtures.Path("local-diffusers/controlnet-modes/sd15b");

    /// <summary>Loads both sets.</summary>
    public LocalDiffusersControlNetModes()
    {
        Multi = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions(), [First, Second]);
        Single = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions(), First);
    }

    /// <summary>tiny-sd15 + both ControlNets, in that order.</summary>
    public StableDiffusionComponents Multi { get; }

    /// <summary>tiny-sd15 + the first ControlNet.</summary>
    public StableDiffusionComponents Single { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Multi.Dispose();
        Single.Dispose();
    }
}

/// <summary>
/// Several ControlNets (diffusers' MultiControlNetModel) and the ControlNet image-to-image and inpainting pipelines
/// against diffusers v0.36.0's own pipelines on tiny-sd15 (fixture local-diffusers/controlnet-modes, made on this project's machine by
/// tools/reference/controlnet_modes.py; see its README). Prompt embeddings are the fixture's random inputs (no CLIP ran
/// in Python). Float32 on the CPU; every step's latents, the final latents and the decoded image are compared, and the
/// timesteps exactly. Measured (max |diff| over the steps' latents, then the image): multi 1.6e-5 on final latents of
/// 28.0, 1.1e-6; multi_guess 9.5e-6 on 26.4, 7.2e-7; img2img 7.4e-6 on 7.2, 2.2e-6; inpaint 2.7e-5 on 22.4, 1.6e-6;
/// inpaint_strength 1.1e-5 on 7.6, 3.6e-6; 9-channel UNet: inpaint9 1.9e-5 on 23.8, 9.8e-7; inpaint9_strength 6.4e-6 on
/// 8.5, 1.3e-6: at most 1.4e-6 of the latents' size. The bound is the ControlNet tests'
/// 1e-5 x max(1, max |expected|), about 7x the worst of those ratios.
/// </summary>
public sealed class ControlNetModesParityTests(LocalDiffusersControlNetModes models, ITestOutputHelper output) : IClassFixture<LocalDiffusersControlNetModes>
{
    private const double Tolerance = 1e-5;
    private const string Folder = "local-diffusers/controlnet-modes/";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "expected.safetensors");
    private static readonly ImageBuffer Control = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png"));
    private static readonly ImageBuffer Control2 = ImageFile.LoadRgb(Fixtures.Path(Folder + "control2.png"));


    private static T Embeds<T>(T r) where T : StableDiffusionRequest => r with
    {
        PromptEmbeds = Expected["in.prompt_embeds"], NegativePromptEmbeds = Expected["in.neg_prompt_embeds"],
    };

    private void Check<T>(string name, T request, long seed, Func<T, StableDiffusionPipelineOutput> generate) where T : StableDiffusionRequest =>
        StepParity.Check(output, Expected, Tolerance, name, request, seed, generate);

    /// <summary>Two ControlNets, scales 0.8 / 1.3, windows [0, 0.7] / [0.3, 1] over 10 steps; and guess mode with scales
    /// 1.0 / 0.6, one end (0.8) for both.</summary>
    [Fact]
    public void TwoControlNetsMatchDiffusers()
    {
        using var pipe = new StableDiffusionControlNetPipeline(models.Multi);
        Check("multi", Embeds(new StableDiffusionControlNetRequest
        {
            Images = [Control, Control2], NumInferenceSteps = 10, ControlNetConditioningScales = [0.8, 1.3],
            ControlGuidanceStarts = [0.0, 0.3], ControlGuidanceEnds = [0.7, 1.0],
        }), 31, r => pipe.Generate(r));
        Check("multi_guess", Embeds(new StableDiffusionControlNetRequest
        {
            Images = [Control, Control2], NumInferenceSteps = 8, GuidanceScale = 3.5, GuessMode = true,
            ControlNetConditioningScales = [1.0, 0.6], ControlGuidanceEnd = 0.8,
        }), 32, r => pipe.Generate(r));
    }

    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path(Folder + "init.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path(Folder + "mask.png"));

    /// <summary>StableDiffusionControlNetImg2ImgPipeline: strength 0.6 of 10 steps (6 run), the default scale (0.8), the
    /// image's size (80 x 64).</summary>
    [Fact]
    public void Img2ImgMatchesDiffusers()
    {
        using var pipe = new StableDiffusionControlNetImg2ImgPipeline(models.Single);
        Check("img2img", Embeds(new StableDiffusionControlNetImg2ImgRequest
        {
            Image = Init, ControlImage = Control, Strength = 0.6, NumInferenceSteps = 10,
        }), 41, r => pipe.Generate(r));
    }

    /// <summary>StableDiffusionControlNetInpaintPipeline with tiny-sd15's 4-channel UNet: the defaults (strength 1, scale
    /// 0.5, the image's size), 8 steps; then strength 0.7 of 10 steps, scale 0.9 from 0.2 of the steps run.</summary>
    [Fact]
    public void InpaintMatchesDiffusers()
    {
        using var pipe = new StableDiffusionControlNetInpaintPipeline(models.Single);
        Check("inpaint", Embeds(new StableDiffusionControlNetInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImage = Control, NumInferenceSteps = 8,
        }), 51, r => pipe.Generate(r));
        Check("inpaint_strength", Embeds(new StableDiffusionControlNetInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImage = Control, Strength = 0.7, NumInferenceSteps = 10,
            ControlNetConditioningScale = 0.9, ControlGuidanceStart = 0.2,
        }), 52, r => pipe.Generate(r));
    }

    /// <summary>StableDiffusionControlNetInpaintPipeline with a 9-channel inpainting UNet (tiny-sd15's with in_channels 9,
    /// conv_in.weight from the fixture): the ControlNet takes the latents alone. The defaults, 8 steps; then strength 0.7
    /// of 10 steps, scale 0.9.</summary>
    [Fact]
    public void NineChannelInpaintMatchesDiffusers()
    {
        var c = models.Single;
        using var unet = UnetVariants.WithConvIn(c.Unet, 9, Expected["in.unet9.conv_in.weight"]);
        // These components borrow the fixture's models: they are not disposed here (that would free the fixture's).
        var components = new StableDiffusionComponents { Unet = unet, Vae = c.Vae, ControlNet = c.ControlNet, Device = CPU, Dtype = ScalarType.Float32 };
        components.UseScheduler(c.SchedulerConfig);
        using var pipe = new StableDiffusionControlNetInpaintPipeline(components);
        Check("inpaint9", Embeds(new StableDiffusionControlNetInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImage = Control, NumInferenceSteps = 8,
        }), 61, r => pipe.Generate(r));
        Check("inpaint9_strength", Embeds(new StableDiffusionControlNetInpaintRequest
        {
            Image = Init, MaskImage = Mask, ControlImage = Control, Strength = 0.7, NumInferenceSteps = 10, ControlNetConditioningScale = 0.9,
        }), 62, r => pipe.Generate(r));
    }

    [Fact]
    public void BadMultiControlNetInputsAreRejectedBeforeAnyCompute()
    {
        Assert.Equal(2, models.Multi.ControlNets.Count);
        Assert.Null(models.Multi.ControlNet); // several: no single ControlNet
        Assert.Same(models.Single.ControlNets[0], models.Single.ControlNet);
        using var pipe = new StableDiffusionControlNetPipeline(models.Multi);
        var ok = Embeds(new StableDiffusionControlNetRequest { Images = [Control, Control2], NumInferenceSteps = 2 });
        string Fails(StableDiffusionControlNetRequest r) => Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message;
        Assert.Contains("2 ControlNet(s) take 2 control image(s)", Fails(ok with { Images = null, Image = Control }));
        Assert.Contains("2 ControlNet(s) take 2 control image(s)", Fails(ok with { Images = [Control] }));
        Assert.Contains("not both", Fails(ok with { Image = Control }));
        Assert.Contains("controlnet_conditioning_scale has 3", Fails(ok with { ControlNetConditioningScales = [1, 1, 1] }));
        Assert.Contains("control_guidance_start has 1", Fails(ok with { ControlGuidanceStarts = [0.1] }));
        Assert.Contains("control_guidance_end has 1", Fails(ok with { ControlGuidanceEnds = [0.5] }));
        Assert.Contains("cannot be larger or equal", Fails(ok with { ControlGuidanceStarts = [0.1, 0.6], ControlGuidanceEnd = 0.5 }));
        Assert.Contains("finite", Fails(ok with { ControlNetConditioningScales = [1, double.NaN] }));
        // The image-to-image and inpainting requests name it control_image, as diffusers does; the plain pipelines refuse them.
        using var img2img = new StableDiffusionControlNetImg2ImgPipeline(models.Single);
        var i2i = Embeds(new StableDiffusionControlNetImg2ImgRequest { Image = Init, NumInferenceSteps = 2 });
        Assert.Contains("control_image (the control image) is required", Assert.Throws<ArgumentException>(() => img2img.Generate(i2i)).Message);
        using var plainImg2Img = new StableDiffusionImg2ImgPipeline(models.Single);
        Assert.Contains("takes a StableDiffusionImg2ImgRequest", Assert.Throws<ArgumentException>(() => plainImg2Img.Generate(i2i with { ControlImage = Control })).Message);
        using var inpaint = new StableDiffusionControlNetInpaintPipeline(models.Single);
        Assert.Contains("mask_image is required", Assert.Throws<ArgumentException>(() => inpaint.Generate(Embeds(
            new StableDiffusionControlNetInpaintRequest { Image = Init, ControlImage = Control, NumInferenceSteps = 2 }))).Message);
        // One ControlNet takes a list of one control image too, and refuses two.
        using var single = new StableDiffusionControlNetPipeline(models.Single);
        Assert.Contains("1 ControlNet(s) take 1 control image(s)",
            Assert.Throws<ArgumentException>(() => single.Generate(ok)).Message);
    }
}
