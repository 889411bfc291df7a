using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Tests.Images;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// FluxKontextInpaintPipeline against diffusers' own runs on local-diffusers/flux-kontext's tiny transformer (fixture
/// local-diffusers/flux-kontext-inpaint, made by tools/reference/flux_kontext_inpaint.py with diffusers 0.36.0 on torch
/// 1.13 CPU, float32; its README says how). Prompt embeddings come from the fixture. The bound is 1e-5 x max(1, max
/// |expected|); the padding_mask_crop image is diffusers' PIL output, compared byte for byte within one level.
/// </summary>
public sealed class FluxKontextInpaintParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private const string Folder = "local-diffusers/flux-kontext-inpaint/";

    private static ImageBuffer Rgb(string path) => ImageFile.LoadRgb(Fixtures.Path(path));

    private static FluxKontextInpaintRequest Request(Dictionary<string, Tensor> expected, long seed) => new()
    {
        PromptEmbeds = expected["in.prompt_embeds"], PooledPromptEmbeds = expected["in.pooled"],
        Image = Rgb("tiny-sd3/init_image.png"), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")), AutoResize = false,
        Generator = new Generator("cpu").ManualSeed(seed),
    };

    /// <summary>Runs a case as the script does (<see cref="FluxParity.Check"/>).</summary>
    private void Check(Func<Dictionary<string, Tensor>, FluxKontextInpaintRequest> request, string name, long seed)
    {
        var expected = Fixtures.Expected(Folder + "expected.safetensors");
        using var components = LocalDiffusersFlux.Components("local-diffusers/flux-kontext/transformer");
        using var pipe = new FluxKontextInpaintPipeline(components);
        try
        {
            FluxParity.Check(r => pipe.Generate(r), request(expected), expected, name, seed, Tolerance, output);
        }
        finally
        {
            foreach (var t in expected.Values) t.Dispose();
        }
    }

    [Fact]
    public void KontextInpaintingWithStrengthMatchesDiffusers() =>
        Check(e => Request(e, 42) with { Strength = 0.75, NumInferenceSteps = 4 }, "inpaint", 42);

    [Fact]
    public void KontextInpaintingWithImageReferenceMatchesDiffusers() => Check(e => Request(e, 7) with
    {
        ImageReference = Rgb("local-diffusers/flux-kontext/kontext_input.png"), NumInferenceSteps = 3, GuidanceScale = 2.5,
    }, "reference", 7);

    [Fact]
    public void KontextInpaintingWithMaskCropMatchesDiffusers()
    {
        var expected = Fixtures.Expected(Folder + "expected.safetensors");
        using var components = LocalDiffusersFlux.Components("local-diffusers/flux-kontext/transformer");
        using var pipe = new FluxKontextInpaintPipeline(components);
        try
        {
            int steps = 0;
            double worst = 0;
            using var result = pipe.Generate(Request(expected, 5) with
            {
                Image = Rgb(Folder + "crop_image.png"), MaskImage = ImageFile.Load(Fixtures.Path(Folder + "crop_mask.png")),
                PaddingMaskCrop = 4, Strength = 0.9, NumInferenceSteps = 3,
                CallbackOnStepEnd = c =>
                {
                    worst = Math.Max(worst, TensorAssert.Close(c.Latents, expected[$"crop.step{c.Step}.latents"], Tolerance, $"crop step {c.Step}"));
                    steps++;
                },
            });
            Assert.Equal(3, steps);
            var image = Assert.Single(result.Images!);
            Assert.Equal((96, 64), (image.Width, image.Height)); // the crop's result at the image's size, not pasted back
            var (count, max) = ImageFixtures.Diff(new ImageBuffer(96, 64, 3, expected["crop.image"].contiguous().data<byte>().ToArray()), image);
            output.WriteLine($"crop: worst step latents {worst:G3}; image: {count} of {image.Pixels.Length} bytes differ, by up to {max}");
            Assert.True(max <= 1, $"crop: image bytes differ by up to {max}");
        }
        finally
        {
            foreach (var t in expected.Values) t.Dispose();
        }
    }

    [Fact]
    public void KontextInpaintingChecksItsInputsBeforeAnyCompute()
    {
        var expected = Fixtures.Expected(Folder + "expected.safetensors");
        using var components = LocalDiffusersFlux.Components("local-diffusers/flux-kontext/transformer");
        using var pipe = new FluxKontextInpaintPipeline(components);
        try
        {
            string Fails(FluxKontextInpaintRequest r) => Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message;
            var r = Request(expected, 1);
            Assert.Contains("mask_image is required", Fails(r with { MaskImage = null }));
            Assert.Contains("image is required", Fails(r with { Image = null }));
            Assert.Contains("strength", Fails(r with { Strength = 1.5 }));
            Assert.Contains("max_area must be positive", Fails(r with { MaxArea = 0 }));
            Assert.Contains("not latents", Fails(r with { Image = PipelineImage.FromTensor(zeros(1, 16, 8, 8)) }));
            Assert.Contains("latents must be [1, 16, 8, 8]", Fails(r with { Latents = zeros(1, 16, 64) }));
            Assert.Contains("output_type must be Image", Fails(r with { PaddingMaskCrop = 4, OutputType = OutputType.Numpy }));
            Assert.Contains("Kontext size", Fails(r with { PaddingMaskCrop = 4, MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")).Resize(48, 64) }));
            Assert.Contains("image_reference", Fails(r with { ImageReference = PipelineImage.FromTensor(zeros(2, 16, 4, 4)) }));
        }
        finally
        {
            foreach (var t in expected.Values) t.Dispose();
        }
    }
}
