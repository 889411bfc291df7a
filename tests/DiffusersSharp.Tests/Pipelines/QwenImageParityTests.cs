using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.QwenImage;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// QwenImagePipeline, QwenImageImg2ImgPipeline and QwenImageInpaintPipeline against diffusers' own runs on the tiny Qwen-Image model (fixture
/// local-diffusers/qwenimage, made by tools/reference/qwenimage.py with diffusers 0.39.0 on torch 1.13 CPU, float32; its
/// README says how). Prompt embeddings come from the fixture, so the text encoder is not part of this check. Each case
/// runs twice as the script does: latents (checked at every step through the step callback), then the decoded image.
/// The bound, 1e-5 × max(1, max |expected|), is the Flux and Z-Image parity tests'.
/// </summary>
public sealed class QwenImageParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/qwenimage/expected.safetensors");
    private readonly QwenImageComponents _components = LocalDiffusersQwenImage.Components();

    private Tensor E(string key) => _expected[key];

    // The first prompt is 7 real tokens of the padded batch, the first negative 5.
    private QwenImageRequest One => new() { PromptEmbeds = E("in.prompt_embeds")[..1, ..7], PromptEmbedsMask = E("in.prompt_embeds_mask")[..1, ..7] };

    private QwenImageRequest OneWithNegative => One with
    {
        NegativePromptEmbeds = E("in.negative_prompt_embeds")[..1, ..5], NegativePromptEmbedsMask = E("in.negative_prompt_embeds_mask")[..1, ..5],
    };

    private void TextToImage(QwenImageRequest request, string name, long seed)
    {
        using var pipe = new QwenImagePipeline(_components);
        LocalDiffusersQwenImage.CheckCase(output, _expected, Tolerance, r => pipe.Generate(r), request, name, seed);
    }

    private void ImageToImage(QwenImageImg2ImgRequest request, string name, long seed)
    {
        using var pipe = new QwenImageImg2ImgPipeline(_components);
        LocalDiffusersQwenImage.CheckCase(output, _expected, Tolerance, r => pipe.Generate(r), request, name, seed);
    }

    [Fact]
    public void WithoutGuidanceMatchesDiffusers() =>
        TextToImage(One with { Height = 64, Width = 64, NumInferenceSteps = 3, TrueCfgScale = 1.0 }, "t2i", 42);

    [Fact]
    public void TrueCfgWithNormRescaleMatchesDiffusers() =>
        TextToImage(OneWithNegative with { Height = 64, Width = 64, NumInferenceSteps = 3, TrueCfgScale = 4.0 }, "t2i_cfg", 7);

    [Fact]
    public void TwoPaddedPromptsMatchDiffusers() =>
        TextToImage(new QwenImageRequest
        {
            PromptEmbeds = E("in.prompt_embeds"), PromptEmbedsMask = E("in.prompt_embeds_mask"),
            NegativePromptEmbeds = E("in.negative_prompt_embeds"), NegativePromptEmbedsMask = E("in.negative_prompt_embeds_mask"),
            Height = 48, Width = 80, NumInferenceSteps = 2, TrueCfgScale = 2.5,
        }, "t2i_two", 123456);

    [Fact]
    public void EachImageKeepsItsPromptsMask()
    {
        // Two images per prompt: images 2k and 2k + 1 are prompt k's, each with prompt k's mask (diffusers v0.39 pairs them
        // with the tiled masks m0, m1, m0, m1 instead; its fixture case runs one image per prompt). From the same starting
        // latents, each prompt's images in the batch must be what that prompt gives alone.
        using var pipe = new QwenImagePipeline(_components);
        using var start = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5).Randn([4, 16, 16], ScalarType.Float32, CPU);
        QwenImageOutput Run(int first, int count) => pipe.Generate(new QwenImageRequest
        {
            PromptEmbeds = E("in.prompt_embeds")[first..(first + count)], PromptEmbedsMask = E("in.prompt_embeds_mask")[first..(first + count)],
            Height = 32, Width = 32, NumInferenceSteps = 2, TrueCfgScale = 1.0, NumImagesPerPrompt = 2, OutputType = OutputType.Latent,
            Latents = start[(2 * first)..(2 * (first + count))],
        });
        using var both = Run(0, 2);
        using var first = Run(0, 1);
        using var second = Run(1, 1);
        output.WriteLine($"prompt 0: {TensorAssert.Close(both.Tensor![..2], first.Tensor!, Tolerance, "prompt 0's images"):G3}, " +
            $"prompt 1: {TensorAssert.Close(both.Tensor![2..4], second.Tensor!, Tolerance, "prompt 1's images"):G3}");
    }

    [Fact]
    public void CustomSigmasMatchDiffusers() =>
        TextToImage(One with { Height = 32, Width = 64, Sigmas = [1.0f, 0.75f, 0.5f, 0.2f], TrueCfgScale = 1.0 }, "t2i_sigmas", 8);

    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
        ImageToImage(new QwenImageImg2ImgRequest
        {
            PromptEmbeds = One.PromptEmbeds, PromptEmbedsMask = One.PromptEmbedsMask, Image = image, Height = 64, Width = 64,
            Strength = 0.6, NumInferenceSteps = 5, TrueCfgScale = 1.0,
        }, "i2i", 123);
    }

    [Fact]
    public void ImageToImageWithCfgMatchesDiffusers()
    {
        var cropped = PillowCompose.Crop(ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), 0, 0, 70, 50);
        var r = OneWithNegative;
        ImageToImage(new QwenImageImg2ImgRequest
        {
            PromptEmbeds = r.PromptEmbeds, PromptEmbedsMask = r.PromptEmbedsMask, NegativePromptEmbeds = r.NegativePromptEmbeds,
            NegativePromptEmbedsMask = r.NegativePromptEmbedsMask, Image = cropped, Height = 48, Width = 64, Strength = 0.85,
            NumInferenceSteps = 4, TrueCfgScale = 3.0,
        }, "i2i_cfg", 99);
    }

    private void Inpaint(QwenImageInpaintRequest request, string name, long seed)
    {
        using var pipe = new QwenImageInpaintPipeline(_components);
        LocalDiffusersQwenImage.CheckCase(output, _expected, Tolerance, r => pipe.Generate(r), request, name, seed);
    }

    [Fact]
    public void InpaintingMatchesDiffusers() =>
        Inpaint(new QwenImageInpaintRequest
        {
            PromptEmbeds = One.PromptEmbeds, PromptEmbedsMask = One.PromptEmbedsMask, Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")),
            MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")), Height = 64, Width = 64, Strength = 0.8, NumInferenceSteps = 4, TrueCfgScale = 1.0,
        }, "inpaint", 21);

    [Fact]
    public void InpaintingWithCfgAndTwoImagesMatchesDiffusers()
    {
        var r = OneWithNegative;
        Inpaint(new QwenImageInpaintRequest
        {
            PromptEmbeds = r.PromptEmbeds, PromptEmbedsMask = r.PromptEmbedsMask, NegativePromptEmbeds = r.NegativePromptEmbeds,
            NegativePromptEmbedsMask = r.NegativePromptEmbedsMask, Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")),
            MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")), Height = 48, Width = 64, Strength = 1.0, NumInferenceSteps = 3,
            TrueCfgScale = 3.0, NumImagesPerPrompt = 2,
        }, "inpaint_cfg", 22);
    }

    [Fact]
    public void InpaintingACropAroundTheMaskMatchesDiffusers()
    {
        // padding_mask_crop 4: the mask's box grown by 4 pixels is inpainted at 48 x 64 and pasted back onto the 64 x 64
        // image (diffusers allows output type "pil" only): every step's latents, then the pasted 8-bit images.
        using var pipe = new QwenImageInpaintPipeline(_components);
        int steps = 0;
        double worst = 0;
        using var result = pipe.Generate(new QwenImageInpaintRequest
        {
            PromptEmbeds = One.PromptEmbeds, PromptEmbedsMask = One.PromptEmbedsMask, Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")),
            MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")), Height = 48, Width = 64, Strength = 0.9, NumInferenceSteps = 3,
            TrueCfgScale = 1.0, PaddingMaskCrop = 4, NumImagesPerPrompt = 2, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(23),
            CallbackOnStepEnd = c =>
            {
                worst = Math.Max(worst, TensorAssert.Close(c.Latents, E($"inpaint_crop.step{c.Step}.latents"), Tolerance, $"step {c.Step}"));
                steps++;
            },
        });
        Assert.Equal(3, steps);
        var expected = E("inpaint_crop.pil");
        Assert.Equal(2, result.Images!.Count);
        int offByOne = 0;
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal((64, 64), (result.Images[i].Width, result.Images[i].Height));
            var theirs = expected[i].flatten().data<float>().ToArray();
            var ours = result.Images[i].Pixels;
            Assert.Equal(theirs.Length, ours.Length);
            // Both sides round a float image to 8 bits (ours within ~1e-6 of theirs), so a value on a rounding midpoint may
            // land one level apart; nothing may be further off.
            for (int j = 0; j < ours.Length; j++)
            {
                int diff = Math.Abs(ours[j] - (int)theirs[j]);
                Assert.True(diff <= 1, $"image {i}, value {j}: {ours[j]} vs diffusers' {theirs[j]}");
                offByOne += diff;
            }
        }
        Assert.True(offByOne <= 8, $"{offByOne} of {2 * 64 * 64 * 3} values one level off");
        output.WriteLine($"inpaint_crop: worst step latents {worst:G3}, {offByOne} of {2 * 64 * 64 * 3} pasted values one level off");
    }

    [Fact]
    public void NoNegativeMeansNoCfgEvenAboveOne()
    {
        // diffusers runs CFG only with a negative prompt: scale 4 without one is the unguided run.
        using var pipe = new QwenImagePipeline(_components);
        using var result = pipe.Generate(One with
        {
            Height = 64, Width = 64, NumInferenceSteps = 3, TrueCfgScale = 4.0, OutputType = OutputType.Latent,
            Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(42),
        });
        TensorAssert.Close(result.Tensor!, E("t2i.latents"), Tolerance, "scale 4 without a negative");
    }

    [Fact]
    public void BadRequestsAreRefusedBeforeCompute()
    {
        using var pipe = new QwenImagePipeline(_components);
        void Refused(QwenImageRequest r, string message) =>
            Assert.Contains(message, Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message);
        Refused(One with { Height = 60, Width = 64 }, "multiples of 8");
        Refused(new QwenImageRequest { Height = 64, Width = 64 }, "Give a prompt or prompt_embeds");
        Refused(One with { Prompt = "a cat", Height = 64, Width = 64 }, "not both");
        Refused(new QwenImageRequest { Prompt = "a cat", Height = 64, Width = 64 }, "need the Qwen2.5-VL text encoder");
        Refused(One with { PromptEmbeds = E("in.prompt_embeds")[..1, ..7, ..8], Height = 64, Width = 64 }, "joint_attention_dim");
        Refused(One with { PromptEmbedsMask = E("in.prompt_embeds_mask")[..1, ..5], Height = 64, Width = 64 }, "prompt_embeds_mask must be [1, 7]");
        Refused(One with { MaxSequenceLength = 1025, Height = 64, Width = 64 }, "between 1 and 1024");
        Refused(One with { NumInferenceSteps = 0, Height = 64, Width = 64 }, "num_inference_steps");
        Refused(One with { Latents = zeros(1, 10, 16), Height = 64, Width = 64 }, "latents must be packed [1, 64, 16]");
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _components.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
