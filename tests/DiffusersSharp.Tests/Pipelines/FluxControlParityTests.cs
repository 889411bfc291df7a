using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// FluxControlPipeline, FluxControlImg2ImgPipeline and FluxControlInpaintPipeline (FLUX.1-Canny-dev / Depth-dev's structural control) against
/// diffusers' own runs on a tiny control transformer (fixture local-diffusers/flux-control, made by
/// tools/reference/flux_control.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README says how): every step's
/// packed latents, the final latents and the image. Prompt embeddings come from the fixture. The bound is the Flux parity
/// tests': 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class FluxControlParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 5e-5;
    private static readonly ImageBuffer Control = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png"));
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux-control/expected.safetensors");
    private readonly FluxComponents _components = LocalDiffusersFlux.Components("local-diffusers/flux-control/transformer");

    public void Dispose()
    {
        _components.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }

    /// <summary>Runs a case as the script does (<see cref="FluxParity.Check"/>) with the fixture's prompt embeddings.</summary>
    private void Check<T>(Func<T, FluxOutput> generate, T request, string name, long seed) where T : FluxRequest =>
        FluxParity.Check(generate, request with { PromptEmbeds = _expected["in.prompt_embeds"], PooledPromptEmbeds = _expected["in.pooled"] },
            _expected, name, seed, Tolerance, output);

    private FluxOutput TextToImage(FluxControlRequest r)
    {
        using var pipe = new FluxControlPipeline(_components);
        return pipe.Generate(r);
    }

    private FluxOutput ImageToImage(FluxControlImg2ImgRequest r)
    {
        using var pipe = new FluxControlImg2ImgPipeline(_components);
        return pipe.Generate(r);
    }

    [Fact]
    public void TextToImageMatchesDiffusers() =>
        Check(TextToImage, new FluxControlRequest { ControlImage = Control, Height = 64, Width = 64, NumInferenceSteps = 4 }, "t2i", 42);

    /// <summary>Two images per prompt: the control image is repeated to the batch before one posterior sample for both.</summary>
    [Fact]
    public void TwoImagesPerPromptMatchDiffusers() => Check(TextToImage, new FluxControlRequest
    {
        ControlImage = Control, Height = 48, Width = 64, NumInferenceSteps = 3, GuidanceScale = 10.0, NumImagesPerPrompt = 2,
    }, "t2i_two", 7);

    [Fact]
    public void ImageToImageMatchesDiffusers() => Check(ImageToImage, new FluxControlImg2ImgRequest
    {
        Image = Init, ControlImage = Control, Height = 64, Width = 64, NumInferenceSteps = 6,
    }, "img2img", 123);

    [Fact]
    public void ImageToImageWithStrengthMatchesDiffusers() => Check(ImageToImage, new FluxControlImg2ImgRequest
    {
        Image = Init, ControlImage = Control, Height = 48, Width = 64, NumInferenceSteps = 8, Strength = 0.9, GuidanceScale = 30.0,
    }, "img2img_strength", 5);

    private FluxOutput Inpaint(FluxControlInpaintRequest r)
    {
        using var pipe = new FluxControlInpaintPipeline(_components);
        return pipe.Generate(r);
    }

    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png"));

    [Fact]
    public void InpaintingMatchesDiffusers() => Check(Inpaint, new FluxControlInpaintRequest
    {
        Image = Init, MaskImage = Mask, ControlImage = Control, Height = 64, Width = 64, NumInferenceSteps = 6,
    }, "inpaint", 77);

    [Fact]
    public void InpaintingAtFullStrengthMatchesDiffusers() => Check(Inpaint, new FluxControlInpaintRequest
    {
        Image = Init, MaskImage = Mask, ControlImage = Control, Height = 64, Width = 64, NumInferenceSteps = 4, Strength = 1.0, GuidanceScale = 30.0,
    }, "inpaint_full", 78);

    [Fact]
    public void BadInputIsRefusedBeforeCompute()
    {
        var embeds = new FluxControlRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], PooledPromptEmbeds = _expected["in.pooled"], Height = 64, Width = 64, NumInferenceSteps = 2,
        };
        Assert.Contains("control_image is required", Assert.Throws<ArgumentException>(() => TextToImage(embeds)).Message);
        Assert.Contains("no true CFG", Assert.Throws<ArgumentException>(() => TextToImage(embeds with
        {
            ControlImage = Control, TrueCfgScale = 4, NegativePromptEmbeds = _expected["in.prompt_embeds"], NegativePooledPromptEmbeds = _expected["in.pooled"],
        })).Message);
        using var latents = zeros(1, 16, 8, 8);
        Assert.Contains("must be an RGB image", Assert.Throws<ArgumentException>(() => TextToImage(embeds with { ControlImage = PipelineImage.FromTensor(latents) })).Message);
        using var noise = zeros(1, 16, 8, 8);
        Assert.Contains("latents and padding_mask_crop do not apply", Assert.Throws<ArgumentException>(() => Inpaint(new FluxControlInpaintRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], PooledPromptEmbeds = _expected["in.pooled"], Height = 64, Width = 64,
            Image = Init, MaskImage = Mask, ControlImage = Control, Latents = noise,
        })).Message);
        // The plain Flux transformer has no control channels.
        using var plain = LocalDiffusersFlux.Components();
        using var pipe = new FluxControlPipeline(plain);
        Assert.Contains("load FLUX.1-Canny-dev or FLUX.1-Depth-dev", Assert.Throws<ArgumentException>(() => pipe.Generate(embeds with { ControlImage = Control })).Message);
    }
}
