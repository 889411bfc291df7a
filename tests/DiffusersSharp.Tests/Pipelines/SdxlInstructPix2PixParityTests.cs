using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sdxl with an 8-channel UNet (tiny-sdxl's weights, conv_in from fixture local-diffusers/sdxl-instruct-pix2pix),
/// its VAE and Euler scheduler and no text encoders, as tools/reference/sdxl_instruct_pix2pix.py assembles it for diffusers.</summary>
public sealed class TinySdxlInstructPix2Pix : IDisposable
{
    private readonly StableDiffusionComponents _sdxl = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
    private readonly UNet2DConditionModel _unet;

    public TinySdxlInstructPix2Pix()
    {
        var expected = Fixtures.Expected("local-diffusers/sdxl-instruct-pix2pix/expected.safetensors");
        _unet = UnetVariants.WithConvIn(_sdxl.Unet, 8, expected["in.unet8.conv_in.weight"]);
        // These components borrow tiny-sdxl's VAE: only the UNet is theirs to free (Dispose below).
        Components = new StableDiffusionComponents { Unet = _unet, Vae = _sdxl.Vae, Device = CPU, Dtype = ScalarType.Float32 };
        Components.UseScheduler((System.Text.Json.Nodes.JsonObject)_sdxl.SchedulerConfig.DeepClone());
        EulerAncestral = new StableDiffusionComponents { Unet = _unet, Vae = _sdxl.Vae, Device = CPU, Dtype = ScalarType.Float32 };
        EulerAncestral.UseScheduler((System.Text.Json.Nodes.JsonObject)_sdxl.SchedulerConfig.DeepClone());
        EulerAncestral.UseScheduler("EulerAncestralDiscreteScheduler");
    }

    /// <summary>The pipeline's components (Euler, tiny-sdxl's scheduler).</summary>
    public StableDiffusionComponents Components { get; }

    /// <summary>The same models with Euler ancestral.</summary>
    public StableDiffusionComponents EulerAncestral { get; }

    public void Dispose()
    {
        _unet.Dispose();
        _sdxl.Dispose();
    }
}

/// <summary>
/// StableDiffusionXLInstructPix2PixPipeline against diffusers' own (fixture local-diffusers/sdxl-instruct-pix2pix, made by
/// tools/reference/sdxl_instruct_pix2pix.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README says how), on a
/// 60 x 52 input resized to the output size: the defaults (guidance 5, image guidance 1.5, 64 x 64) with negative
/// embeddings, image guidance below 1 (no guidance), two images per prompt with zero negatives (force_zeros_for_empty_prompt),
/// a given size with micro-conditioning, guidance rescale and denoising_end, CosXL Edit's scaled image latents, and Euler
/// ancestral. Every step's timestep and latents, the final latents and the image, within the UNet parity bound,
/// 5e-5 x max(1, max |expected|), as the SD 1.x InstructPix2Pix test.
/// </summary>
public sealed class SdxlInstructPix2PixParityTests(TinySdxlInstructPix2Pix model, ITestOutputHelper output) : IClassFixture<TinySdxlInstructPix2Pix>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sdxl-instruct-pix2pix/expected.safetensors");
    private static readonly ImageBuffer Input = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/sdxl-instruct-pix2pix/input.png"));

    private static readonly StableDiffusionInstructPix2PixRequest WithNegative = new()
    {
        NegativePromptEmbeds = Expected["in.negative_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.negative_pooled_prompt_embeds"],
    };

    private void Check(string name, StableDiffusionInstructPix2PixRequest request, long seed, StableDiffusionComponents? components = null, bool cosXL = false)
    {
        using var pipe = new StableDiffusionXLInstructPix2PixPipeline(components ?? model.Components, cosXL);
        StepParity.Check(output, Expected, Tolerance, name, request with
        {
            Image = Input, PromptEmbeds = Expected["in.prompt_embeds"], PooledPromptEmbeds = Expected["in.pooled_prompt_embeds"],
        }, seed, r => pipe.Generate(r));
    }

    [Fact]
    public void DefaultsMatchDiffusers() => Check("default", WithNegative with { NumInferenceSteps = 6 }, 41);

    [Fact]
    public void ImageGuidanceBelowOneRunsWithoutGuidance() =>
        Check("no_cfg", new StableDiffusionInstructPix2PixRequest { NumInferenceSteps = 5, ImageGuidanceScale = 0.8 }, 42);

    [Fact]
    public void TwoImagesPerPromptWithZeroNegativesMatchDiffusers() => Check("two", new StableDiffusionInstructPix2PixRequest
    {
        NumInferenceSteps = 4, GuidanceScale = 4.0, ImageGuidanceScale = 2.0, NumImagesPerPrompt = 2,
    }, 43);

    [Fact]
    public void SizeMicroConditioningRescaleAndDenoisingEndMatchDiffusers() => Check("sized", WithNegative with
    {
        NumInferenceSteps = 6, Height = 48, Width = 56, OriginalSize = (96, 112), CropsCoordsTopLeft = (4, 8), TargetSize = (40, 72),
        GuidanceRescale = 0.7, DenoisingEnd = 0.6,
    }, 44);

    [Fact]
    public void CosXLEditScalesTheImageLatents() => Check("cosxl", WithNegative with { NumInferenceSteps = 4 }, 45, cosXL: true);

    [Fact]
    public void EulerAncestralMatchesDiffusers() =>
        Check("euler_a", WithNegative with { NumInferenceSteps = 5, GuidanceScale = 6.0, ImageGuidanceScale = 1.2 }, 46, model.EulerAncestral);

    [Fact]
    public void AFloat16VaeEncodesTheImageInFloat32AndStaysFloat16()
    {
        // diffusers' prepare_image_latents: needs_upcasting (float16 VAE with force_upcast) encodes in float32, then casts back.
        string dir = Directory.CreateTempSubdirectory("xl-pix2pix-f16").FullName;
        try
        {
            TinyInstructPix2PixFolder.WriteXL(dir);
            using var components = StableDiffusionComponents.FromPretrained(dir, new PipelineLoadOptions { Dtype = ScalarType.Float16 });
            Assert.True(components.Vae.Config.ForceUpcast);
            using var pipe = new StableDiffusionXLInstructPix2PixPipeline(components);
            var request = new StableDiffusionInstructPix2PixRequest { Prompt = "make it snowy", NumInferenceSteps = 2, OutputType = OutputType.Latent };
            using var fromImage = pipe.Generate(request with { Image = Input, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(3) });
            Assert.Equal(ScalarType.Float16, components.Vae.WeightDtype());
            // The same image latents by hand: the posterior mode of a float32 VAE, in float16, given as a latent tensor.
            Tensor byHand;
            DiffusersSharp.Pipelines.ModuleMover.CastTo(components.Vae, ScalarType.Float32);
            using (var _ = inference_mode())
            {
                using var pixels = pipe.ImageProcessor.Preprocess(Input, 64, 64);
                using var posterior = components.Vae.Encode(pixels);
                byHand = posterior.Mode().to(ScalarType.Float16).DetachFromDisposeScope();
            }
            DiffusersSharp.Pipelines.ModuleMover.CastTo(components.Vae, ScalarType.Float16);
            using (byHand)
            {
                using var fromLatents = pipe.Generate(request with { Image = PipelineImage.FromTensor(byHand), Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(3) });
                Assert.Equal(ScalarType.Float16, fromImage.Tensor!.dtype);
                Assert.True(fromImage.Tensor.eq(fromLatents.Tensor!).all().item<bool>());
                // A float16 encode would give other latents: the upcast is what this checks.
                using var _ = inference_mode();
                using var pixels16 = pipe.ImageProcessor.Preprocess(Input, 64, 64).to(ScalarType.Float16);
                using var posterior16 = components.Vae.Encode(pixels16);
                Assert.False(posterior16.Mode().eq(byHand).all().item<bool>());
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void BadInputIsRefusedBeforeCompute()
    {
        using var pipe = new StableDiffusionXLInstructPix2PixPipeline(model.Components);
        var request = new StableDiffusionInstructPix2PixRequest
        {
            PromptEmbeds = Expected["in.prompt_embeds"], PooledPromptEmbeds = Expected["in.pooled_prompt_embeds"], NumInferenceSteps = 2,
        };
        Assert.Contains("image is required", Assert.Throws<ArgumentException>(() => pipe.Generate(request)).Message);
        Assert.Contains("takes no clip_skip", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = Input, ClipSkip = 1 })).Message);
        Assert.Contains("negative size / crop", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = Input, NegativeOriginalSize = (64, 64) })).Message);
        Assert.Contains("multiples of 8", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = Input, Height = 60 })).Message);
        Assert.Contains("pooled_prompt_embeds", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = Input, PooledPromptEmbeds = null })).Message);
        using (var latents = zeros(1, 4, 6, 6))
            Assert.Contains("latent tensor of 6x6", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = PipelineImage.FromTensor(latents) })).Message);
        // The SD 1.x pipeline refuses SDXL components; tiny-sdxl's own 4-channel UNet does not take the image's latents.
        Assert.Throws<ArgumentException>(() => new StableDiffusionInstructPix2PixPipeline(model.Components));
        using var sdxl = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        using var plain = new StableDiffusionXLInstructPix2PixPipeline(sdxl);
        Assert.Contains("diffusers/sdxl-instructpix2pix-768", Assert.Throws<ArgumentException>(() => plain.Generate(request with { Image = Input })).Message);
    }
}
