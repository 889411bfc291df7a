using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Tests.Images;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Flux2KleinInpaintPipeline against diffusers' own runs on fixture local-diffusers/flux2-klein's tiny model
/// (inpaint.safetensors, made by tools/reference/flux2_klein_inpaint.py with diffusers 0.39.0 on torch 1.13 CPU,
/// float32): a base model with CFG, a distilled one at strength 1 on an odd-sized image with two prompts x two images, a
/// second reference image, and padding_mask_crop's pasted 8-bit image. Each case runs twice as the script does: latents
/// (every step's and the final ones), then the decoded image; the bound is the other flow pipelines' 1e-5 x max(1, |expected|).
/// </summary>
public sealed class Flux2KleinInpaintParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _inputs = Fixtures.Expected("local-diffusers/flux2-klein/expected.safetensors");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux2-klein/inpaint.safetensors");
    private readonly Flux2KleinComponents _base = LocalDiffusersFlux2Klein.Components(distilled: false);
    private readonly Flux2KleinComponents _distilled = LocalDiffusersFlux2Klein.Components(distilled: true);

    private Tensor In(string key) => _inputs[key];

    private static ImageBuffer Image => ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));

    private static ImageBuffer Mask => ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png"));

    private void Check(Flux2KleinComponents components, Flux2KleinInpaintRequest request, string name, long seed)
    {
        using var pipe = new Flux2KleinInpaintPipeline(components);
        LocalDiffusersFlux2Klein.CheckCase(output, _expected, Tolerance, r => pipe.Generate(r), request, name, seed);
    }

    [Fact]
    public void BaseModelWithCfgMatchesDiffusers() =>
        Check(_base, new Flux2KleinInpaintRequest
        {
            Image = Image, MaskImage = Mask, PromptEmbeds = In("in.prompt_embeds")[..1], NegativePromptEmbeds = In("in.negative_prompt_embeds")[..1],
            Strength = 0.8, NumInferenceSteps = 3, GuidanceScale = 4.0,
        }, "inpaint", 21);

    [Fact]
    public void AnOddSizedImageAtFullStrengthMatchesDiffusers() =>
        // 90 x 70 resized (LANCZOS) to 88 x 64, the 64 x 64 mask resized to it; two prompts x two images, distilled.
        Check(_distilled, new Flux2KleinInpaintRequest
        {
            Image = LocalDiffusersFlux2Klein.Pixels(In("in.odd")), MaskImage = Mask, PromptEmbeds = In("in.prompt_embeds"), Strength = 1.0, NumInferenceSteps = 2,
            NumImagesPerPrompt = 2,
        }, "inpaint_odd", 22);

    [Fact]
    public void ASecondReferenceImageMatchesDiffusers() =>
        Check(_base, new Flux2KleinInpaintRequest
        {
            Image = Image, MaskImage = Mask, ImageReference = LocalDiffusersFlux2Klein.Pixels(In("in.wide")), PromptEmbeds = In("in.prompt_embeds")[1..],
            NegativePromptEmbeds = In("in.negative_prompt_embeds")[1..], Strength = 0.7, NumInferenceSteps = 3, GuidanceScale = 3.0,
        }, "inpaint_ref", 23);

    [Fact]
    public void InpaintingACropAroundTheMaskMatchesDiffusers()
    {
        // padding_mask_crop 4: the mask's box grown by 4 pixels inpainted at 64 x 64 (fill mode), pasted back.
        using var pipe = new Flux2KleinInpaintPipeline(_distilled);
        int steps = 0;
        double worst = 0;
        using var result = pipe.Generate(new Flux2KleinInpaintRequest
        {
            Image = Image, MaskImage = Mask, PromptEmbeds = In("in.prompt_embeds")[..1], Strength = 0.9, NumInferenceSteps = 2, PaddingMaskCrop = 4,
            Generator = new Generator("cpu").ManualSeed(24),
            CallbackOnStepEnd = c =>
            {
                worst = Math.Max(worst, TensorAssert.Close(c.Latents, _expected[$"inpaint_crop.step{c.Step}.latents"], Tolerance, $"step {c.Step}"));
                steps++;
            },
        });
        Assert.Equal(2, steps);
        // The pasted 8-bit image: values within 1e-6 of diffusers' can round to the other side of a half; one byte in
        // 12288 does (measured), so bytes may differ by one, in a handful of places.
        var image = Assert.Single(result.Images!);
        var (count, max) = ImageFixtures.Diff(new ImageBuffer(64, 64, 3, _expected["inpaint_crop.pil"].to(ScalarType.Byte).contiguous().data<byte>().ToArray()), image);
        output.WriteLine($"inpaint_crop: worst step latents {worst:G3}; pasted image: {count} of {image.Pixels.Length} bytes differ, by up to {max}");
        Assert.True(max <= 1 && count <= 8, $"inpaint_crop: {count} bytes differ, by up to {max}");
    }

    [Fact]
    public void BadRequestsAreRefusedBeforeCompute()
    {
        using var pipe = new Flux2KleinInpaintPipeline(_distilled);
        var ok = new Flux2KleinInpaintRequest { Image = Image, MaskImage = Mask, PromptEmbeds = In("in.prompt_embeds")[..1], NumInferenceSteps = 2 };
        Assert.Contains("mask_image is required", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { MaskImage = null })).Message);
        Assert.Contains("strength", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Strength = 1.5 })).Message);
        Assert.Contains("leaves 0 steps", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Strength = 0.0 })).Message);
        Assert.Contains("image_reference", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Images = [Image] })).Message);
        Assert.Contains("output_type must be Image", Assert.Throws<ArgumentException>(() =>
            pipe.Generate(ok with { PaddingMaskCrop = 2, OutputType = OutputType.Numpy })).Message);
    }

    public void Dispose()
    {
        _base.Dispose();
        _distilled.Dispose();
        foreach (var t in _expected.Values.Concat(_inputs.Values)) t.Dispose();
    }
}
