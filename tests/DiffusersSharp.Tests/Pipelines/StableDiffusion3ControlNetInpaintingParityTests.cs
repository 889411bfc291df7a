using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// StableDiffusion3ControlNetInpaintingPipeline against diffusers 0.36.0's own run (fixture
/// local-diffusers/sd3-controlnet-inpaint, made by tools/reference/sd3_controlnet_inpaint.py on torch 1.13 CPU, float32):
/// tiny-sd3 with the shared fixture's stored t2i prompt embeddings and a tiny inpainting ControlNet diffusers drew with
/// <c>from_transformer(num_extra_conditioning_channels=1)</c>, control image tiny-sd3's init_image.png and mask mask.png.
/// Checked: the masked image's VAE encode (diffusers draws its posterior sample from torch's global generator, seeded by
/// the script before each call, here <c>ControlImageGenerator</c>), the VAE shift, the inverted mask as the 17th channel,
/// zero pooled projections, the scale, every step's latents and the decode.
/// Measured here: latents within 8.2e-6 of each tensor's max (step 0: 5.1e-5 of 6.2; final 1.3e-4 of 40.9), image 3.6e-6;
/// the same order as the SD3 ControlNet parity tests. Replacing the inverted mask by the mask fails step 0 by 0.27.
/// Bounds as the SD3 ControlNet parity tests: 5e-5 x max(1, max |expected|) for latents, 5e-5 for images in [0, 1].
/// </summary>
public sealed class StableDiffusion3ControlNetInpaintingParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Shared = Fixtures.Expected();
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd3-controlnet-inpaint/expected.safetensors");
    private static string Net => Fixtures.Path("local-diffusers/sd3-controlnet-inpaint/controlnet");

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], Tolerance, key):G3} (max |expected| {Expected[key].abs().max().item<float>():G3})");

    private static StableDiffusion3ControlNetInpaintingRequest Request(long seed, long controlSeed, Action<StepEndContext>? onStep) => new()
    {
        PromptEmbeds = Shared["t2i.prompt_embeds"], NegativePromptEmbeds = Shared["t2i.negative_prompt_embeds"],
        PooledPromptEmbeds = Shared["t2i.pooled_prompt_embeds"], NegativePooledPromptEmbeds = Shared["t2i.negative_pooled_prompt_embeds"],
        ControlImage = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), ControlMask = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
        NumInferenceSteps = 4, GuidanceScale = 4.5, Height = 64, Width = 64, ControlNetConditioningScale = 0.8,
        Generator = new Generator("cpu").ManualSeed(seed), ControlImageGenerator = new Generator("cpu").ManualSeed(controlSeed),
        OutputType = OutputType.Latent, CallbackOnStepEnd = onStep,
    };

    [Fact]
    public void InpaintMatchesDiffusers()
    {
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(), Net);
        using var pipe = new StableDiffusion3ControlNetInpaintingPipeline(components);
        int steps = 0;
        using (var latents = pipe.Generate(Request(321, 6, c => { Close(c.Latents, $"inpaint.step{c.Step}.latents"); steps++; })))
            Close(latents.Tensor!, "inpaint.latents");
        Assert.Equal(4, steps);
        using var image = pipe.Generate(Request(321, 6, null) with { OutputType = OutputType.Numpy });
        Close(image.Tensor!, "inpaint.image");
    }

    [Fact]
    public void InvalidInputsAndControlNetsAreRefused()
    {
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(), Net);
        using var pipe = new StableDiffusion3ControlNetInpaintingPipeline(components);
        var ok = Request(1, 1, null) with { NumInferenceSteps = 1 };
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlMask = null }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlImage = null }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlMask = PipelineImage.FromTensor(zeros(1, 3, 64, 64)) }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { SkipGuidanceLayers = [0] }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlNetConditioningScales = [1, 2] }));
        // The text-to-image pipeline gives the control latents alone: it cannot run an inpainting ControlNet.
        var t2i = Assert.Throws<ArgumentException>(() => new StableDiffusion3ControlNetPipeline(components));
        Assert.Contains("StableDiffusion3ControlNetInpaintingPipeline", t2i.Message);
        // And this pipeline cannot run a ControlNet without the extra channel, nor two ControlNets.
        using var plain = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(),
            Fixtures.Path("local-diffusers/sd3-controlnet/controlnet"));
        Assert.Throws<ArgumentException>(() => new StableDiffusion3ControlNetInpaintingPipeline(plain));
        using var two = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(), [Net, Net]);
        Assert.Throws<ArgumentException>(() => new StableDiffusion3ControlNetInpaintingPipeline(two));
    }
}
