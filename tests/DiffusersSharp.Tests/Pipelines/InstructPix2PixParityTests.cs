using DiffusersSharp.Images;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sd15 with an 8-channel UNet (tiny-sd15's weights, conv_in from fixture local-diffusers/instruct-pix2pix)
/// and Euler ancestral, as tools/reference/instruct_pix2pix.py assembles it for diffusers.</summary>
public sealed class TinyInstructPix2Pix : IDisposable
{
    private readonly StableDiffusionComponents _sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
    private readonly UNet2DConditionModel _unet;

    public TinyInstructPix2Pix()
    {
        var expected = Fixtures.Expected("local-diffusers/instruct-pix2pix/expected.safetensors");
        _unet = UnetVariants.WithConvIn(_sd15.Unet, 8, expected["in.unet8.conv_in.weight"]);
        // These components borrow tiny-sd15's VAE: only the UNet is theirs to free (Dispose below).
        Components = new StableDiffusionComponents { Unet = _unet, Vae = _sd15.Vae, Device = CPU, Dtype = ScalarType.Float32 };
        var scheduler = (System.Text.Json.Nodes.JsonObject)_sd15.SchedulerConfig.DeepClone();
        Components.UseScheduler(scheduler);
        Components.UseScheduler("EulerAncestralDiscreteScheduler");
    }

    /// <summary>The pipeline's components.</summary>
    public StableDiffusionComponents Components { get; }

    public void Dispose()
    {
        _unet.Dispose();
        _sd15.Dispose();
    }
}

/// <summary>
/// StableDiffusionInstructPix2PixPipeline against diffusers' own (fixture local-diffusers/instruct-pix2pix, made by
/// tools/reference/instruct_pix2pix.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README says how): the
/// defaults (guidance 7.5, image guidance 1.5) with negative embeddings, image guidance below 1 (no guidance), two images
/// per prompt; a 60 x 52 input (output 56 x 48). Every step's timestep and latents, the final latents and the image,
/// within the UNet parity bound, 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class InstructPix2PixParityTests(TinyInstructPix2Pix model, ITestOutputHelper output) : IClassFixture<TinyInstructPix2Pix>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/instruct-pix2pix/expected.safetensors");
    private static readonly ImageBuffer Input = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/instruct-pix2pix/input.png"));

    private void Check(string name, StableDiffusionInstructPix2PixRequest request, long seed)
    {
        using var pipe = new StableDiffusionInstructPix2PixPipeline(model.Components);
        StepParity.Check(output, Expected, Tolerance, name, request with { Image = Input, PromptEmbeds = Expected["in.prompt_embeds"] }, seed,
            r => pipe.Generate(r));
    }

    [Fact]
    public void DefaultsMatchDiffusers() =>
        Check("default", new StableDiffusionInstructPix2PixRequest { NegativePromptEmbeds = Expected["in.negative_prompt_embeds"], NumInferenceSteps = 6 }, 41);

    [Fact]
    public void ImageGuidanceBelowOneRunsWithoutGuidance() =>
        Check("no_cfg", new StableDiffusionInstructPix2PixRequest { NumInferenceSteps = 5, ImageGuidanceScale = 0.8 }, 42);

    [Fact]
    public void TwoImagesPerPromptMatchDiffusers() => Check("two", new StableDiffusionInstructPix2PixRequest
    {
        NegativePromptEmbeds = Expected["in.negative_prompt_embeds"], NumInferenceSteps = 4, GuidanceScale = 5.0, ImageGuidanceScale = 2.0,
        NumImagesPerPrompt = 2,
    }, 43);

    [Fact]
    public void BadInputIsRefusedBeforeCompute()
    {
        using var pipe = new StableDiffusionInstructPix2PixPipeline(model.Components);
        var request = new StableDiffusionInstructPix2PixRequest { PromptEmbeds = Expected["in.prompt_embeds"], NumInferenceSteps = 2 };
        Assert.Contains("image is required", Assert.Throws<ArgumentException>(() => pipe.Generate(request)).Message);
        Assert.Contains("takes no height / width", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = Input, Height = 64 })).Message);
        Assert.Contains("image_guidance_scale must be a finite number",
            Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = Input, ImageGuidanceScale = double.NaN })).Message);
        // tiny-sd15's own 4-channel UNet does not take the image's latents.
        using var sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var plain = new StableDiffusionInstructPix2PixPipeline(sd15);
        Assert.Contains("load an InstructPix2Pix model", Assert.Throws<ArgumentException>(() => plain.Generate(request with { Image = Input })).Message);
    }
}
