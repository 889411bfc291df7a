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

/// <summary>The tiny latent upscaler of fixture local-diffusers/sd-latent-upscale (its K-UNet and Euler scheduler,
/// tiny-sd15's VAE, no text encoder), as tools/reference/sd_latent_upscale.py assembles it for diffusers.</summary>
public sealed class TinyLatentUpscaler : IDisposable
{
    public static string Folder => Fixtures.Path("local-diffusers/sd-latent-upscale/model");

    public TinyLatentUpscaler()
    {
        Components = new StableDiffusionComponents
        {
            Unet = UNet2DConditionModel.FromPretrained(Path.Combine(Folder, "unet")),
            Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd15/model/vae")),
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
/// StableDiffusionLatentUpscalePipeline against diffusers' own (fixture local-diffusers/sd-latent-upscale, made by
/// tools/reference/sd_latent_upscale.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README says how): latents in
/// with the defaults (guidance 9) and negative embeddings, an image in (VAE posterior sample from the generator) without
/// guidance, and two prompts with two non-square latents and zero negatives. Every step's timestep and latents, the final
/// latents and the image, within the UNet parity bound, 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class LatentUpscaleParityTests(TinyLatentUpscaler model, ITestOutputHelper output) : IClassFixture<TinyLatentUpscaler>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd-latent-upscale/expected.safetensors");

    private void Check(string name, StableDiffusionLatentUpscaleRequest request, long seed)
    {
        using var pipe = new StableDiffusionLatentUpscalePipeline(model.Components);
        StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
    }

    private static StableDiffusionLatentUpscaleRequest Request() => new()
    {
        PromptEmbeds = Expected["in.prompt_embeds"], PooledPromptEmbeds = Expected["in.pooled_prompt_embeds"],
        NegativePromptEmbeds = Expected["in.negative_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.negative_pooled_prompt_embeds"],
        Image = PipelineImage.FromTensor(Expected["in.latents_image"]),
    };

    [Fact]
    public void LatentsInWithTheDefaultsMatchDiffusers() => Check("latents", Request() with { NumInferenceSteps = 4 }, 61);

    [Fact]
    public void AnImageInWithoutGuidanceMatchesDiffusers() => Check("image", Request() with
    {
        NegativePromptEmbeds = null, NegativePooledPromptEmbeds = null, NumInferenceSteps = 3, GuidanceScale = 1.0,
        Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png")),
    }, 62);

    [Fact]
    public void TwoPromptsWithNonSquareLatentsMatchDiffusers() => Check("batch", new StableDiffusionLatentUpscaleRequest
    {
        PromptEmbeds = Expected["in.batch_prompt_embeds"], PooledPromptEmbeds = Expected["in.batch_pooled_prompt_embeds"],
        NegativePromptEmbeds = zeros(2, 77, 32), NegativePooledPromptEmbeds = zeros(2, 32),
        Image = PipelineImage.FromTensor(Expected["in.batch_latents_image"]), NumInferenceSteps = 2, GuidanceScale = 5.0,
    }, 63);

    [Fact]
    public void BadInputIsRefusedBeforeCompute()
    {
        using var pipe = new StableDiffusionLatentUpscalePipeline(model.Components);
        var request = Request() with { NumInferenceSteps = 2 };
        void Refused(string fragment, StableDiffusionLatentUpscaleRequest r) =>
            Assert.Contains(fragment, Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message);
        Refused("image is required", request with { Image = null });
        Refused("pooled_prompt_embeds", request with { PooledPromptEmbeds = null });
        Refused("negative_pooled_prompt_embeds", request with { NegativePooledPromptEmbeds = null });
        Refused("num_images_per_prompt other than 1", request with { NumImagesPerPrompt = 2 });
        Refused("takes no height / width", request with { Height = 64 });
        Refused("takes no eta", request with { Eta = 0.5 });
        Refused("multiples of 4, at least 8", request with { Image = PipelineImage.FromTensor(zeros(1, 4, 3, 8)) });
        Refused("batch size 1 and the image 2", request with { Image = PipelineImage.FromTensor(Expected["in.batch_latents_image"]) });
        Refused("latents must have shape [1, 4, 16, 16]", request with { Latents = zeros(1, 4, 8, 8) });
        Refused("time_cond_proj_dim must be 176", request with { PooledPromptEmbeds = zeros(1, 48), NegativePooledPromptEmbeds = zeros(1, 48) });
        Refused("no text encoder", request with { PromptEmbeds = null, PooledPromptEmbeds = null, Prompt = "a cat" });
        Assert.Contains("use StableDiffusionLatentUpscalePipeline", Assert.Throws<ArgumentException>(() => new StableDiffusionPipeline(model.Components)).Message);
        using var sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        Assert.Contains("not a latent upscaler", Assert.Throws<ArgumentException>(() => new StableDiffusionLatentUpscalePipeline(sd15)).Message);
    }

    [Fact]
    public void PreviewsAndImagesAreTwiceTheInput()
    {
        using var pipe = new StableDiffusionLatentUpscalePipeline(model.Components);
        IReadOnlyList<ImageBuffer>? preview = null;
        using var result = pipe.Generate(Request() with
        {
            NumInferenceSteps = 2, Generator = new Generator("cpu").ManualSeed(1), CallbackOnStepEnd = c => preview ??= pipe.PreviewImages(c.Latents),
        });
        Assert.Equal((128, 128), (result.Images![0].Width, result.Images[0].Height)); // latents 8 x 8 -> 16 x 16 -> 128 x 128 pixels
        Assert.Equal((128, 128), (preview![0].Width, preview[0].Height));
    }
}
