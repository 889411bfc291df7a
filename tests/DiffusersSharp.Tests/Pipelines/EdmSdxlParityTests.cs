using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>A Playground-v2.5-like tiny-sdxl folder (VAE latents_mean / latents_std, EDM DPM-Solver++ scheduler) loaded
/// from disk, tiny-sdxl itself with CosXL's EDM Euler scheduler, and the 8-channel CosXL Edit UNet, as
/// tools/reference/edm_sdxl.py assembles them for diffusers.</summary>
public sealed class TinyEdmSdxl : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("edm-sdxl").FullName;
    private readonly UNet2DConditionModel _unet8;

    public TinyEdmSdxl()
    {
        TinyPlaygroundFolder.Write(_dir);
        Playground = StableDiffusionComponents.FromPretrained(_dir, new PipelineLoadOptions());
        CosXL = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        CosXL.UseScheduler((JsonObject)JsonNode.Parse(TinyPlaygroundFolder.CosXLSchedulerConfig)!);
        var conv = Fixtures.Expected("local-diffusers/sdxl-instruct-pix2pix/expected.safetensors")["in.unet8.conv_in.weight"];
        _unet8 = UnetVariants.WithConvIn(CosXL.Unet, 8, conv);
        // These components borrow CosXL's VAE: only the UNet is theirs to free (Dispose below).
        CosXLEdit = new StableDiffusionComponents { Unet = _unet8, Vae = CosXL.Vae, Device = CPU, Dtype = ScalarType.Float32 };
        CosXLEdit.UseScheduler((JsonObject)JsonNode.Parse(TinyPlaygroundFolder.CosXLSchedulerConfig)!);
    }

    /// <summary>The Playground-like components (EDMDPMSolverMultistepScheduler from the folder's scheduler config).</summary>
    public StableDiffusionComponents Playground { get; }

    /// <summary>tiny-sdxl with CosXL's EDMEulerScheduler.</summary>
    public StableDiffusionComponents CosXL { get; }

    /// <summary>The 8-channel InstructPix2Pix UNet with CosXL's scheduler and tiny-sdxl's VAE.</summary>
    public StableDiffusionComponents CosXLEdit { get; }

    public void Dispose()
    {
        _unet8.Dispose();
        Playground.Dispose();
        CosXL.Dispose();
        Directory.Delete(_dir, true);
    }
}

/// <summary>
/// The SDXL pipelines with the EDM schedulers against diffusers' own (fixture local-diffusers/edm-sdxl, made by
/// tools/reference/edm_sdxl.py with diffusers 0.36.0 on torch 1.13 CPU, float32): Playground v2.5's setup (VAE
/// latents_mean / latents_std and scaling_factor 0.5, EDMDPMSolverMultistepScheduler) in text-to-image (also the SDE
/// variant), image-to-image (normalized image latents) and inpainting (image latents scaled only, as diffusers' inpaint
/// encode), and CosXL's EDMEulerScheduler (v_prediction, sigma_data 1, exponential sigmas) in text-to-image and in
/// InstructPix2Pix with is_cosxl_edit. Every step's timestep (exactly) and latents, the final latents and the image,
/// within the UNet parity bound, 5e-5 x max(1, max |expected|), as the other SDXL tests.
/// </summary>
public sealed class EdmSdxlParityTests(TinyEdmSdxl model, ITestOutputHelper output) : IClassFixture<TinyEdmSdxl>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/edm-sdxl/expected.safetensors");
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path("tiny-sdxl/init_image.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("tiny-sdxl/mask.png"));
    private static readonly ImageBuffer EditInput = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/sdxl-instruct-pix2pix/input.png"));

    private static T WithEmbeds<T>(T request) where T : StableDiffusionRequest => request with
    {
        PromptEmbeds = Expected["in.prompt_embeds"], PooledPromptEmbeds = Expected["in.pooled_prompt_embeds"],
        NegativePromptEmbeds = Expected["in.negative_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.negative_pooled_prompt_embeds"],
    };

    [Fact]
    public void TheFolderLoadsItsEdmSchedulerAndNormalizedVae()
    {
        Assert.Equal("EDMDPMSolverMultistepScheduler", model.Playground.SchedulerClassName);
        using var scheduler = model.Playground.CreateScheduler();
        Assert.IsType<EDMDPMSolverMultistepScheduler>(scheduler);
        Assert.Equal(4, model.Playground.Vae.Config.LatentsMean!.Length);
        Assert.Equal(0.5, model.Playground.Vae.Config.ScalingFactor);
    }

    [Fact]
    public void PlaygroundTextToImageMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLPipeline(model.Playground);
        StepParity.Check(output, Expected, Tolerance, "t2i", WithEmbeds(new StableDiffusionRequest { NumInferenceSteps = 6, GuidanceScale = 3.0 }), 51,
            r => pipe.Generate(r));
    }

    [Fact]
    public void PlaygroundSdeDrawsNoiseAsDiffusers()
    {
        string dir = Directory.CreateTempSubdirectory("edm-sde").FullName;
        try
        {
            TinyPlaygroundFolder.Write(dir);
            using var components = StableDiffusionComponents.FromPretrained(dir, new PipelineLoadOptions());
            components.UseScheduler("edm_dpmpp_2m_sde");
            using var pipe = new StableDiffusionXLPipeline(components);
            StepParity.Check(output, Expected, Tolerance, "t2i_sde", WithEmbeds(new StableDiffusionRequest { NumInferenceSteps = 5, GuidanceScale = 3.0 }), 52,
                r => pipe.Generate(r));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void PlaygroundImageToImageNormalizesTheImageLatents()
    {
        using var pipe = new StableDiffusionXLImg2ImgPipeline(model.Playground);
        StepParity.Check(output, Expected, Tolerance, "img2img",
            WithEmbeds(new StableDiffusionImg2ImgRequest { Image = Init, Strength = 0.6, NumInferenceSteps = 8, GuidanceScale = 3.0 }), 53,
            r => pipe.Generate(r));
    }

    [Fact]
    public void PlaygroundInpaintingScalesTheImageLatentsOnly()
    {
        using var pipe = new StableDiffusionXLInpaintPipeline(model.Playground);
        StepParity.Check(output, Expected, Tolerance, "inpaint",
            WithEmbeds(new StableDiffusionInpaintRequest { Image = Init, MaskImage = Mask, Strength = 0.75, NumInferenceSteps = 6, GuidanceScale = 3.0 }), 54,
            r => pipe.Generate(r));
    }

    [Fact]
    public void CosXLEdmEulerVPredictionMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLPipeline(model.CosXL);
        StepParity.Check(output, Expected, Tolerance, "cosxl", WithEmbeds(new StableDiffusionRequest { NumInferenceSteps = 5 }), 55, r => pipe.Generate(r));
    }

    [Fact]
    public void CosXLEditWithEdmEulerMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLInstructPix2PixPipeline(model.CosXLEdit, true);
        StepParity.Check(output, Expected, Tolerance, "cosxl_edit",
            WithEmbeds(new StableDiffusionInstructPix2PixRequest { Image = EditInput, NumInferenceSteps = 4 }), 56, r => pipe.Generate(r));
    }
}
