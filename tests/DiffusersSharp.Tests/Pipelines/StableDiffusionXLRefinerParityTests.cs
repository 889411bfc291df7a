using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// SDXL's refiner (aesthetic-score time ids, text_encoder_2 alone) and the base + refiner ensemble against diffusers'
/// own StableDiffusionXLImg2ImgPipeline / StableDiffusionXLPipeline v0.36.0 on the tiny models (fixture
/// local-diffusers/sdxl-refiner, made on this project's machine by tools/reference/sdxl_refiner.py; see its README).
/// Prompt embeddings are the fixture's random inputs (no CLIP ran in Python). Float32 on the CPU; every step's latents,
/// the final latents and the decoded image are compared, and the time ids and timesteps exactly. Measured: i2i latents
/// 2.4e-6 (max |latents| 2.2), image 1.7e-6; base latents 2.1e-5 on latents of 25.5 (8.3e-7 relative), image 9.5e-7;
/// refine latents 1.9e-6 on 25.4, image 6.6e-7. The bound, 1e-5 x max(1, max |expected|), sits about 9x above the worst.
/// </summary>
public sealed class StableDiffusionXLRefinerParityTests(TinyRefiner models, ITestOutputHelper output) : IClassFixture<TinyRefiner>
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sdxl-refiner/expected.safetensors");


    private static T Embeds<T>(T request, string who) where T : StableDiffusionRequest => request with
    {
        PromptEmbeds = Expected[$"in.{who}.prompt_embeds"], PooledPromptEmbeds = Expected[$"in.{who}.pooled"],
        NegativePromptEmbeds = Expected[$"in.{who}.neg_prompt_embeds"], NegativePooledPromptEmbeds = Expected[$"in.{who}.neg_pooled"],
    };

    /// <summary>A case as <see cref="StepParity.Check"/> runs it, plus the SDXL time ids, exactly.</summary>
    private void Check<T>(string name, T request, long seed, Func<T, StableDiffusionPipelineOutput> generate) where T : StableDiffusionRequest
    {
        Tensor? timeIds = null;
        StepParity.Check(output, Expected, Tolerance, name, request, seed, generate, c => timeIds ??= c.AddTimeIds!.clone().DetachFromDisposeScope());
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(timeIds!, Expected[$"{name}.add_time_ids"]));
    }

    [Fact]
    public void RefinerImageToImageWithAestheticScoresMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLImg2ImgPipeline(models.Refiner);
        var request = Embeds(new StableDiffusionImg2ImgRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sdxl/init_image.png")), Strength = 0.3, NumInferenceSteps = 20, GuidanceScale = 5.0,
            AestheticScore = 7.0, NegativeAestheticScore = 2.0, OriginalSize = (96, 80), CropsCoordsTopLeft = (4, 8),
            NegativeOriginalSize = (48, 40), NegativeCropsCoordsTopLeft = (0, 4),
        }, "refiner");
        Check("i2i", request, 31, r => pipe.Generate(r));
    }

    [Fact]
    public void BaseToEightyPercentThenRefinerMatchesDiffusers()
    {
        using var basePipe = new StableDiffusionXLPipeline(models.Base);
        var baseRequest = Embeds(new StableDiffusionRequest { Height = 64, Width = 64, NumInferenceSteps = 10, GuidanceScale = 5.0, DenoisingEnd = 0.8 }, "base");
        Check("base", baseRequest, 1234, r => basePipe.Generate(r));

        // The refiner starts from diffusers' hand-off latents, so its half is checked on its own.
        using var refiner = new StableDiffusionXLImg2ImgPipeline(models.Refiner);
        var refineRequest = Embeds(new StableDiffusionImg2ImgRequest
        {
            Image = PipelineImage.FromTensor(Expected["base.latents"]), NumInferenceSteps = 10, GuidanceScale = 5.0, DenoisingStart = 0.8,
        }, "refiner");
        Check("refine", refineRequest, 99, r => refiner.Generate(r));
    }
}
