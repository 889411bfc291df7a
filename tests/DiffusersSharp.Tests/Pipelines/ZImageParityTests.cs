using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// ZImagePipeline and ZImageImg2ImgPipeline against diffusers' own runs on the tiny Z-Image model (fixture
/// local-diffusers/z-image, made by tools/reference/z_image.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README
/// says how). Prompt embeddings come from the fixture, so Qwen3 is not part of this check. Each case runs twice as the
/// script does: latents (checked at every step through the step callback), then the decoded image. The bound,
/// 1e-5 × max(1, max |expected|), is the Flux parity tests'.
/// </summary>
public sealed class ZImageParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/z-image/expected.safetensors");
    private readonly ZImageComponents _components = LocalDiffusersZImage.Components();

    private Tensor E(string key) => _expected[key];

    private Tensor[] Embeds(int count) => Enumerable.Range(0, count).Select(i => E($"in.prompt_embeds.{i}")).ToArray();

    private Tensor[] Negatives(int count) => Enumerable.Range(0, count).Select(i => E($"in.negative_prompt_embeds.{i}")).ToArray();

    private void Check<T>(Func<T, ZImageOutput> generate, T request, string name, long seed) where T : ZImageRequest =>
        LocalDiffusersZImage.CheckCase(output, _expected, Tolerance, generate, request, name, seed);

    private void TextToImage(ZImageRequest request, string name, long seed, string scheduler = "scheduler")
    {
        using var components = scheduler == "scheduler" ? null : LocalDiffusersZImage.Components(scheduler);
        using var pipe = new ZImagePipeline(components ?? _components);
        Check(r => pipe.Generate(r), request, name, seed);
    }

    [Fact]
    public void TurboLikeWithoutGuidanceMatchesDiffusers() =>
        TextToImage(new ZImageRequest { PromptEmbeds = Embeds(1), Height = 64, Width = 64, NumInferenceSteps = 4, GuidanceScale = 0.0 }, "t2i", 42);

    [Fact]
    public void GuidanceWithNegativeEmbeddingsMatchesDiffusers() =>
        TextToImage(new ZImageRequest
        {
            PromptEmbeds = Embeds(1), NegativePromptEmbeds = Negatives(1), Height = 64, Width = 64, NumInferenceSteps = 4, GuidanceScale = 4.0,
        }, "t2i_cfg", 7);

    [Fact]
    public void CfgNormalizationMatchesDiffusers() =>
        TextToImage(new ZImageRequest
        {
            PromptEmbeds = Embeds(1), NegativePromptEmbeds = Negatives(1), Height = 64, Width = 64, NumInferenceSteps = 3, GuidanceScale = 4.0,
            CfgNormalization = 1, // diffusers' cfg_normalization=True
        }, "t2i_cfg_norm", 11);

    [Fact]
    public void CfgTruncationMatchesDiffusers() =>
        TextToImage(new ZImageRequest
        {
            PromptEmbeds = Embeds(1), NegativePromptEmbeds = Negatives(1), Height = 64, Width = 64, NumInferenceSteps = 6, GuidanceScale = 4.0,
            CfgTruncation = 0.3,
        }, "t2i_cfg_trunc", 13);

    [Fact]
    public void TwoPromptsOfDifferentLengthsTwoImagesEachMatchDiffusers() =>
        TextToImage(new ZImageRequest
        {
            PromptEmbeds = Embeds(2), NegativePromptEmbeds = Negatives(2), Height = 32, Width = 48, NumInferenceSteps = 2, GuidanceScale = 3.0,
            NumImagesPerPrompt = 2,
        }, "t2i_two", 123456);

    [Fact]
    public void NonSquareSizeMatchesDiffusers() =>
        TextToImage(new ZImageRequest { PromptEmbeds = Embeds(1), Height = 48, Width = 80, NumInferenceSteps = 3, GuidanceScale = 0.0 }, "t2i_wide", 5);

    [Fact]
    public void DynamicShiftingMatchesDiffusers() =>
        TextToImage(new ZImageRequest { PromptEmbeds = Embeds(1), Height = 64, Width = 96, NumInferenceSteps = 3, GuidanceScale = 0.0 }, "t2i_dynamic", 6,
            "scheduler-dynamic");

    [Fact]
    public void CustomSigmasMatchDiffusers() =>
        TextToImage(new ZImageRequest { PromptEmbeds = Embeds(1), Height = 64, Width = 64, Sigmas = [1.0f, 0.7f, 0.4f, 0.1f], GuidanceScale = 0.0 }, "t2i_sigmas", 8);

    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        using var pipe = new ZImageImg2ImgPipeline(_components);
        Check(r => pipe.Generate(r), new ZImageImg2ImgRequest
        {
            PromptEmbeds = Embeds(1), Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Strength = 0.6, NumInferenceSteps = 5,
            GuidanceScale = 0.0,
        }, "i2i", 123);
    }

    [Fact]
    public void ImageToImageWithGuidanceOnAResizedImageMatchesDiffusers()
    {
        // The script crops init_image.png to 70 x 50; the processor resizes that (Lanczos) to 64 x 48.
        var image = PillowCompose.Crop(ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), 0, 0, 70, 50);
        using var pipe = new ZImageImg2ImgPipeline(_components);
        Check(r => pipe.Generate(r), new ZImageImg2ImgRequest
        {
            PromptEmbeds = Embeds(1), NegativePromptEmbeds = Negatives(1), Image = image, Strength = 0.85, NumInferenceSteps = 4, GuidanceScale = 3.0,
        }, "i2i_cfg", 99);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _components.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
