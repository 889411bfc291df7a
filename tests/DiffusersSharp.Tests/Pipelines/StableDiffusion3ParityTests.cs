using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The SD3 pipelines against diffusers' own runs on the tiny model (tiny-sd3/expected.safetensors).
/// The fixture's T5 outputs were made with dropout active (T5 in training mode: ~10% exact zeros in every T5 embedding,
/// see TextEncoderTests), so each diffusers call saw different T5 embeddings. What does not depend on T5 is compared
/// exactly here; the end-to-end comparisons that do are kept, skipped, until the fixture is regenerated in eval mode.
/// </summary>
public sealed class StableDiffusion3ParityTests(ITestOutputHelper output) : IClassFixture<TinySd3Pipeline>
{
    private const string FixtureT5Dropout =
        "tiny-sd3 fixture: T5 ran with dropout (training mode), so diffusers' T5 embeddings are not reproducible; regenerate with text_encoder_3.eval().";

    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected();

    [Theory]
    [InlineData("t2i", "A photo of a group of teddy bears eating pizza on the surface of mars", "pepperoni")]
    [InlineData("t2i_nocfg", "A highly detailed photograph of a baby dragon", "")]
    public void ClipPartOfThePromptEmbeddingsMatches(string name, string prompt, string negative)
    {
        var encoder = TinySd3Pipeline.Shared.CreatePromptEncoder();
        using var _ = inference_mode();
        using var encoded = encoder.Encode(new StableDiffusion3Request { Prompt = prompt, NegativePrompt = negative }, true, CPU);
        Assert.Equal(Expected[$"{name}.prompt_embeds"].shape, encoded.PromptEmbeds.shape);
        // Rows 0..76: CLIP-L | CLIP-G penultimate states, zero-padded to the joint width. Rows 77..: T5 (see class remarks).
        double e1 = TensorAssert.Close(encoded.PromptEmbeds[.., ..77], Expected[$"{name}.prompt_embeds"][.., ..77], what: "clip prompt_embeds");
        double e2 = TensorAssert.Close(encoded.PooledPromptEmbeds, Expected[$"{name}.pooled_prompt_embeds"], what: "pooled");
        double e3 = TensorAssert.Close(encoded.NegativePromptEmbeds![.., ..77], Expected[$"{name}.negative_prompt_embeds"][.., ..77], what: "negative clip");
        double e4 = TensorAssert.Close(encoded.NegativePooledPromptEmbeds!, Expected[$"{name}.negative_pooled_prompt_embeds"], what: "negative pooled");
        output.WriteLine($"{name}: clip {e1:G3}, pooled {e2:G3}, negative clip {e3:G3}, negative pooled {e4:G3}");
    }

    // C.latents (output_type "latent") and C.image (output_type "np") come from two separate diffusers calls, which saw
    // different T5 dropout: with the current fixture they are not the same generation.
    [Theory(Skip = FixtureT5Dropout)]
    [InlineData("t2i", true)]
    [InlineData("t2i_nocfg", true)]
    [InlineData("i2i", true)]
    [InlineData("inpaint", false)] // diffusers' inpainting decodes latents / scaling_factor without the shift
    public void DecodingTheFinalLatentsGivesTheFixtureImage(string name, bool withShift)
    {
        var vae = TinySd3Pipeline.Shared.Vae;
        using var _ = inference_mode();
        var z = Expected[$"{name}.latents"] / vae.Config.ScalingFactor;
        if (withShift) z = z + vae.Config.ShiftFactor!.Value;
        using var processor = new PipelineProbe(TinySd3Pipeline.Shared);
        var image = processor.ImageProcessor.Postprocess(vae.Decode(z));
        double err = TensorAssert.MaxAbsDiff(image, Expected[$"{name}.image"]);
        output.WriteLine($"{name}: decoded image max |diff| = {err:G3}");
        Assert.True(err <= 1e-4, $"{name}: {err}");
    }

    [Fact]
    public void InpaintingKeepsTheFixtureLatentsOutsideTheMaskAtEveryStep()
    {
        // Outside the mask the latents are the image's latents noised to the next timestep: they depend on the VAE
        // posterior draw, the noise draw (in diffusers' order), scale_noise and the step index, not on any embedding.
        using var pipe = new StableDiffusion3InpaintPipeline(TinySd3Pipeline.Shared);
        var steps = new List<Tensor>();
        using var generator = new Generator("cpu").ManualSeed(42);
        var request = new StableDiffusion3InpaintRequest
        {
            Prompt = "on the surface of the moon", Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")),
            MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")), Strength = 0.99, NumInferenceSteps = 5, GuidanceScale = 7.0,
            Generator = generator, OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => steps.Add(c.Latents.clone().DetachFromDisposeScope()),
        };
        using var result = pipe.Generate(request);
        using var mask = pipe.MaskProcessor.Preprocess(ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")), 256, 256);
        using var keep = (nn.functional.interpolate(mask, [32, 32]) < 0.5).expand(1, 16, 32, 32);
        Assert.InRange(keep.sum().item<long>(), 16 * 32, 16 * 32 * 32 - 16 * 32); // both regions are non-trivial
        Assert.Equal(5, steps.Count);
        for (int i = 0; i < steps.Count; i++)
        {
            var ours = steps[i].masked_select(keep);
            var theirs = Expected[$"inpaint.step{i}.latents"].masked_select(keep);
            double err = TensorAssert.Close(ours, theirs, what: $"inpaint step {i} outside the mask");
            output.WriteLine($"inpaint step {i}: outside-mask max |diff| = {err:G3}");
        }
        foreach (var s in steps) s.Dispose();
    }

    [Theory(Skip = FixtureT5Dropout)]
    [InlineData("t2i", "A photo of a group of teddy bears eating pizza on the surface of mars", "pepperoni", 4, 4.5, 64, 64, 123456)]
    [InlineData("t2i_nocfg", "A highly detailed photograph of a baby dragon", null, 3, 1.0, 64, 80, 7)]
    public void TextToImageEndToEnd(string name, string prompt, string? negative, int steps, double guidance, int height, int width, long seed)
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        var stepLatents = new List<Tensor>();
        var request = new StableDiffusion3Request
        {
            Prompt = prompt, NegativePrompt = negative is null ? null : (PromptList?)negative, NumInferenceSteps = steps, GuidanceScale = guidance, Height = height, Width = width,
            Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => stepLatents.Add(c.Latents.clone().DetachFromDisposeScope()),
        };
        using var latents = pipe.Generate(request);
        for (int i = 0; i < steps; i++) TensorAssert.Close(stepLatents[i], Expected[$"{name}.step{i}.latents"], 1e-3, $"step {i}");
        TensorAssert.Close(latents.Tensor!, Expected[$"{name}.latents"], 1e-3, "final latents");
        using var image = pipe.Generate(request with { OutputType = OutputType.Numpy, CallbackOnStepEnd = null, Generator = new Generator("cpu").ManualSeed(seed) });
        Assert.True(TensorAssert.MaxAbsDiff(image.Tensor!, Expected[$"{name}.image"]) <= 2.0 / 255);
    }

    /// <summary>Exposes the pipeline's processors for the decode test.</summary>
    private sealed class PipelineProbe(StableDiffusion3Components components) : StableDiffusion3PipelineBase(components)
    {
        protected override int DefaultSteps => 1;
    }
}

/// <summary>The tiny SD3 pipeline components, loaded once for the test run.</summary>
public sealed class TinySd3Pipeline : IDisposable
{
    private static readonly Lazy<StableDiffusion3Components> Components = new(() =>
        StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions()));

    /// <summary>The shared components; pipelines built on them take their own reference.</summary>
    public static StableDiffusion3Components Shared => Components.Value;

    public void Dispose() { }
}
