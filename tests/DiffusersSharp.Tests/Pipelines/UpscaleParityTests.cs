using DiffusersSharp.Images;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>The tiny x4 upscaler of fixture local-diffusers/sd-upscale (UNet, VAE, DDIM and the DDPM low-resolution
/// scheduler from its folder, no text encoder), as tools/reference/sd_upscale.py assembles it for diffusers.</summary>
public sealed class TinyUpscaler : IDisposable
{
    public static string Folder => Fixtures.Path("local-diffusers/sd-upscale/model");

    public TinyUpscaler()
    {
        using var lowRes = DDPMScheduler.FromPretrained(Path.Combine(Folder, "low_res_scheduler"));
        Components = new StableDiffusionComponents
        {
            Unet = UNet2DConditionModel.FromPretrained(Path.Combine(Folder, "unet")),
            Vae = AutoencoderKL.FromPretrained(Path.Combine(Folder, "vae")),
            LowResSchedulerConfig = lowRes.Config,
            Device = CPU,
            Dtype = ScalarType.Float32,
        };
        Components.UseScheduler(SchedulerConfigText.Parse(SchedulerConfigText.Read(Path.Combine(Folder, "scheduler"))));
    }

    /// <summary>The pipeline's components.</summary>
    public StableDiffusionComponents Components { get; }

    public void Dispose() => Components.Dispose();
}

/// <summary>
/// StableDiffusionUpscalePipeline against diffusers' own (fixture local-diffusers/sd-upscale, made by
/// tools/reference/sd_upscale.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README says how): the defaults
/// (guidance 9, noise level 20) with negative embeddings, noise level 50 without guidance, two images per prompt, a 22 x 13
/// image (resized to 20 x 12 by the bicubic image processor) with DDIM's eta, and two prompts with two images and two
/// images per prompt (diffusers' pairing). Every step's timestep and latents, the final latents and the image, within
/// the UNet parity bound, 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class UpscaleParityTests(TinyUpscaler model, ITestOutputHelper output) : IClassFixture<TinyUpscaler>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd-upscale/expected.safetensors");
    private static readonly ImageBuffer Input = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/sd-upscale/input.png"));
    private static readonly ImageBuffer NonSquare = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/sd-upscale/input_nonsquare.png"));

    private void Check(string name, StableDiffusionUpscaleRequest request, long seed)
    {
        using var pipe = new StableDiffusionUpscalePipeline(model.Components);
        StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
    }

    private static StableDiffusionUpscaleRequest Request(ImageBuffer? image = null) => new()
    {
        Image = image ?? Input, PromptEmbeds = Expected["in.prompt_embeds"], NegativePromptEmbeds = Expected["in.negative_prompt_embeds"],
    };

    [Fact]
    public void DefaultsMatchDiffusers() => Check("default", Request() with { NumInferenceSteps = 5 }, 51);

    [Fact]
    public void NoiseLevel50WithoutGuidanceMatchesDiffusers() =>
        Check("no_cfg", Request() with { NegativePromptEmbeds = null, NumInferenceSteps = 4, GuidanceScale = 1.0, NoiseLevel = 50 }, 52);

    [Fact]
    public void TwoImagesPerPromptMatchDiffusers() =>
        Check("two", Request() with { NumInferenceSteps = 3, GuidanceScale = 6.0, NumImagesPerPrompt = 2 }, 53);

    [Fact]
    public void ANonSquareImageWithEtaMatchesDiffusers() =>
        Check("nonsquare", Request(NonSquare) with { NumInferenceSteps = 4, NoiseLevel = 100, Eta = 0.7 }, 54);

    [Fact]
    public void TwoPromptsWithTwoImagesEachPairAsDiffusersDoes() => Check("batch", new StableDiffusionUpscaleRequest
    {
        Image = PipelineImage.FromTensor(Expected["in.batch_image"]), PromptEmbeds = Expected["in.batch_prompt_embeds"],
        NegativePromptEmbeds = Expected["in.batch_negative_prompt_embeds"], NumInferenceSteps = 2, GuidanceScale = 4.0,
        NumImagesPerPrompt = 2, NoiseLevel = 0,
    }, 55);

    [Fact]
    public void GivenLatentsAreTheDrawAfterTheImageNoise()
    {
        // diffusers draws the image's noise, then the latents: the generator's second draw, given as latents, is the same run.
        using var g = new Generator("cpu").ManualSeed(51);
        g.Randn([1, 3, 16, 16], ScalarType.Float32, CPU).Dispose();
        using var drawn = g.Randn([1, 4, 16, 16], ScalarType.Float32, CPU);
        using var pipe = new StableDiffusionUpscalePipeline(model.Components);
        using var result = pipe.Generate(Request() with
        {
            NumInferenceSteps = 5, Latents = drawn, Generator = new Generator("cpu").ManualSeed(51), OutputType = OutputType.Latent,
        });
        output.WriteLine($"given latents: {TensorAssert.Close(result.Tensor!, Expected["default.latents"], Tolerance, "default latents"):G3}");
    }

    [Fact]
    public void PreviewsDecodeAtFourTimesTheImage()
    {
        using var pipe = new StableDiffusionUpscalePipeline(model.Components);
        IReadOnlyList<ImageBuffer>? preview = null;
        using var result = pipe.Generate(Request(NonSquare) with
        {
            NumInferenceSteps = 2, Generator = new Generator("cpu").ManualSeed(1),
            CallbackOnStepEnd = c => preview ??= pipe.PreviewImages(c.Latents),
        });
        var image = Assert.Single(result.Images!);
        Assert.Equal((80, 48), (image.Width, image.Height));
        Assert.Equal((80, 48), (preview![0].Width, preview[0].Height));
    }

    [Fact]
    public void BadInputIsRefusedBeforeCompute()
    {
        using var pipe = new StableDiffusionUpscalePipeline(model.Components);
        var request = Request() with { NumInferenceSteps = 2 };
        void Refused(string fragment, StableDiffusionUpscaleRequest r) =>
            Assert.Contains(fragment, Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message);
        Refused("image is required", request with { Image = null });
        Refused("noise_level must be in [0, 350]", request with { NoiseLevel = 351 });
        Refused("noise_level must be in [0, 350]", request with { NoiseLevel = -1 });
        Refused("takes no height / width", request with { Height = 64 });
        Refused("takes no guidance_rescale", request with { GuidanceRescale = 0.5 });
        Refused("at least 4 pixels", request with { Image = new ImageBuffer(3, 8, 3, new byte[3 * 8 * 3]) });
        Refused("make 8", request with { Image = PipelineImage.FromTensor(zeros(1, 4, 16, 16)) });
        Refused("batch size 1 and the image 2", request with { Image = PipelineImage.FromTensor(Expected["in.batch_image"]) });
        Refused("latents must have shape [1, 4, 16, 16]", request with { Latents = zeros(1, 4, 8, 8) });
        Refused("one generator per image", request with { NumImagesPerPrompt = 2, Generators = [new Generator("cpu"), new Generator("cpu")] });
        // Other pipelines refuse upscaler components, and the upscaler refuses the others'.
        Assert.Contains("use StableDiffusionUpscalePipeline", Assert.Throws<ArgumentException>(() => new StableDiffusionPipeline(model.Components)).Message);
        using var sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        Assert.Contains("not an x4 upscaler", Assert.Throws<ArgumentException>(() => new StableDiffusionUpscalePipeline(sd15)).Message);
    }
}
