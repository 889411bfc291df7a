using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// A refiner-shaped SDXL folder, as stabilityai's refiner is laid out: the refiner of fixture local-diffusers/sdxl-refiner
/// (its model_index.json: no text_encoder / tokenizer, requires_aesthetics_score true, force_zeros_for_empty_prompt
/// false; its UNet, drawn by diffusers, whose cross-attention takes text_encoder_2's 32-wide states and whose
/// add_embedding takes 5 time ids x 8 + 32 pooled = 72 features) completed with tiny-sdxl's VAE, scheduler and second
/// text encoder in a temporary folder, as tools/reference/sdxl_refiner.py built diffusers' pipeline. Also tiny-sdxl's
/// own components as the base.
/// </summary>
public sealed class TinyRefiner : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), $"diffuserssharp-refiner-{Guid.NewGuid():N}");

    /// <summary>Builds the folder and loads both models.</summary>
    public TinyRefiner()
    {
        static void CopyDir(string from, string to)
        {
            Directory.CreateDirectory(to);
            foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }
        string source = Fixtures.Path("tiny-sdxl/model"), fixture = Fixtures.Path("local-diffusers/sdxl-refiner");
        foreach (var name in new[] { "vae", "scheduler", "text_encoder_2", "tokenizer_2" }) CopyDir(Path.Combine(source, name), Path.Combine(_folder, name));
        CopyDir(Path.Combine(fixture, "unet"), Path.Combine(_folder, "unet"));
        File.Copy(Path.Combine(fixture, "model_index.json"), Path.Combine(_folder, "model_index.json"));
        Refiner = StableDiffusionComponents.FromPretrained(_folder, new PipelineLoadOptions());
        Base = StableDiffusionComponents.FromPretrained(source, new PipelineLoadOptions());
    }

    /// <summary>The refiner-shaped components.</summary>
    public StableDiffusionComponents Refiner { get; }

    /// <summary>tiny-sdxl's components (6 time ids, both text encoders, Euler with leading spacing and steps_offset 1).</summary>
    public StableDiffusionComponents Base { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Refiner.Dispose();
        Base.Dispose();
        Directory.Delete(_folder, recursive: true);
    }
}

/// <summary>
/// SDXL's refiner support and the base + refiner "ensemble of experts" on tiny models: aesthetic-score time ids, the
/// add_embedding size check, a folder without the first text encoder, denoising_end / denoising_start cutoffs. There are
/// no diffusers fixtures for these paths; the expected values are diffusers' formulas worked out by hand.
/// </summary>
public sealed class StableDiffusionXLRefinerTests(TinyRefiner models) : IClassFixture<TinyRefiner>
{
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("tiny-sd15/mask.png"));

    // Euler, leading spacing, steps_offset 1, 10 steps: (arange(10) * 100)[::-1] + 1.
    private static readonly float[] TenSteps = [901, 801, 701, 601, 501, 401, 301, 201, 101, 1];

    private static Generator Seed(long seed) => new Generator("cpu").ManualSeed(seed);

    /// <summary>Rows of numbers as "a,b,c | d,e,f" (readable when an assertion fails).</summary>
    private static string Rows(params float[][] rows) => string.Join(" | ", rows.Select(r => string.Join(",", r)));

    /// <summary>The add_time_ids the UNet gets at the first step, as <see cref="Rows"/>.</summary>
    private static string FirstTimeIds(Func<Action<StepEndContext>, StableDiffusionPipelineOutput> run)
    {
        float[][]? rows = null;
        using var _ = run(c =>
        {
            var ids = c.AddTimeIds!;
            rows = Enumerable.Range(0, (int)ids.shape[0]).Select(i => ids[i].data<float>().ToArray()).ToArray();
            c.Interrupt = true;
        });
        return Rows(rows!);
    }

    [Fact]
    public void TextToImageTimeIdsAreSizeCropTargetAndNegativesOnlyWithBothNegativeSizes()
    {
        using var pipe = new StableDiffusionXLPipeline(models.Base);
        var request = new StableDiffusionRequest
        {
            Prompt = "a red circle", NumInferenceSteps = 2, Height = 64, Width = 48, Generator = Seed(1), OutputType = OutputType.Latent,
        };
        var plain = FirstTimeIds(cb => pipe.Generate(request with { CallbackOnStepEnd = cb }));
        Assert.Equal(Rows([64, 48, 0, 0, 64, 48], [64, 48, 0, 0, 64, 48]), plain);

        var sized = request with
        {
            OriginalSize = (128, 96), CropsCoordsTopLeft = (3, 4), TargetSize = (32, 24),
            NegativeOriginalSize = (16, 16), NegativeCropsCoordsTopLeft = (1, 2), NegativeTargetSize = (8, 8),
        };
        Assert.Equal(Rows([16, 16, 1, 2, 8, 8], [128, 96, 3, 4, 32, 24]), FirstTimeIds(cb => pipe.Generate(sized with { CallbackOnStepEnd = cb })));
        // One negative size alone: diffusers reuses the positive ids for the negative half.
        var half = sized with { NegativeTargetSize = null };
        Assert.Equal(Rows([128, 96, 3, 4, 32, 24], [128, 96, 3, 4, 32, 24]), FirstTimeIds(cb => pipe.Generate(half with { CallbackOnStepEnd = cb })));
        // Two images: the [negative; positive] pair repeated per image, as diffusers' cat(...).repeat(batch, 1) lays it out.
        var two = FirstTimeIds(cb => pipe.Generate(sized with { NumImagesPerPrompt = 2, CallbackOnStepEnd = cb }));
        Assert.Equal(Rows([16, 16, 1, 2, 8, 8], [128, 96, 3, 4, 32, 24], [16, 16, 1, 2, 8, 8], [128, 96, 3, 4, 32, 24]), two);
    }

    [Fact]
    public void ImageToImageTimeIdsHaveSixNumbersForTheBaseAndFiveWithTheAestheticScore()
    {
        var request = new StableDiffusionImg2ImgRequest
        {
            Prompt = "a red circle", Image = Init, NumInferenceSteps = 4, Strength = 0.5, Height = 64, Width = 48, Generator = Seed(1),
            OutputType = OutputType.Latent, OriginalSize = (128, 96), CropsCoordsTopLeft = (3, 4),
            NegativeOriginalSize = (16, 16), NegativeCropsCoordsTopLeft = (1, 2),
        };
        using (var basePipe = new StableDiffusionXLImg2ImgPipeline(models.Base))
        {
            // Negative sizes default to the positive ones; diffusers pairs them with the positive crop corner.
            var ids = FirstTimeIds(cb => basePipe.Generate(request with { CallbackOnStepEnd = cb }));
            Assert.Equal(Rows([16, 16, 3, 4, 64, 48], [128, 96, 3, 4, 64, 48]), ids);
        }
        using var refiner = new StableDiffusionXLImg2ImgPipeline(models.Refiner);
        var scored = FirstTimeIds(cb => refiner.Generate(request with { AestheticScore = 7.25, CallbackOnStepEnd = cb }));
        Assert.Equal(Rows([16, 16, 1, 2, 2.5f], [128, 96, 3, 4, 7.25f]), scored);
        // Two images: all negatives first, then all positives.
        var two = FirstTimeIds(cb => refiner.Generate(request with { NumImagesPerPrompt = 2, CallbackOnStepEnd = cb }));
        Assert.Equal(Rows([16, 16, 1, 2, 2.5f], [16, 16, 1, 2, 2.5f], [128, 96, 3, 4, 6], [128, 96, 3, 4, 6]), two);
        // Without guidance only the positive ids.
        var noCfg = FirstTimeIds(cb => refiner.Generate(request with { GuidanceScale = 1, CallbackOnStepEnd = cb }));
        Assert.Equal(Rows([128, 96, 3, 4, 6]), noCfg);
    }

    [Fact]
    public void TheAddEmbeddingCheckSaysWhichWayToSetRequiresAestheticsScore()
    {
        var request = new StableDiffusionImg2ImgRequest { Prompt = "x", Image = Init, NumInferenceSteps = 4, Height = 64, Width = 64, Generator = Seed(1) };
        // tiny-sdxl's UNet takes 6 ids x 8 + 32 = 80 features; 5 ids give 72.
        models.Base.RequiresAestheticsScore = true;
        try
        {
            using var pipe = new StableDiffusionXLImg2ImgPipeline(models.Base);
            var error = Assert.Throws<ArgumentException>(() => pipe.Generate(request));
            Assert.Contains("80 features", error.Message);
            Assert.Contains("give 72", error.Message);
            Assert.Contains("RequiresAestheticsScore = false", error.Message);
        }
        finally
        {
            models.Base.RequiresAestheticsScore = false;
        }
        models.Refiner.RequiresAestheticsScore = false;
        try
        {
            using var pipe = new StableDiffusionXLInpaintPipeline(models.Refiner);
            var error = Assert.Throws<ArgumentException>(() => pipe.Generate(new StableDiffusionInpaintRequest
            {
                Prompt = "x", Image = Init, MaskImage = Mask, NumInferenceSteps = 2, Height = 64, Width = 64, Generator = Seed(1), AestheticScore = 5,
            }));
            Assert.Contains("72 features", error.Message);
            Assert.Contains("RequiresAestheticsScore = true", error.Message);
            Assert.Contains("aesthetic_score 5", error.Message);
        }
        finally
        {
            models.Refiner.RequiresAestheticsScore = true;
        }
        // Text-to-image always builds 6 ids: the refiner's UNet does not fit it.
        using var t2i = new StableDiffusionXLPipeline(models.Refiner);
        var t2iError = Assert.Throws<ArgumentException>(() => t2i.Generate(new StableDiffusionRequest { Prompt = "x", NumInferenceSteps = 2, Height = 64, Width = 64 }));
        Assert.Contains("incorrect config", t2iError.Message);
    }

    [Fact]
    public void ARefinerFolderLoadsWithoutTheFirstTextEncoderAndEncodesThePromptWithTheSecond()
    {
        var c = models.Refiner;
        Assert.Null(c.TextEncoder);
        Assert.Null(c.Tokenizer);
        Assert.True(c.IsXL);
        Assert.True(c.RequiresAestheticsScore);
        Assert.False(c.ForceZerosForEmptyPrompt);

        using var _ = inference_mode();
        var encoder = c.CreatePromptEncoder();
        using var encoded = encoder.Encode(new StableDiffusionRequest { Prompt = "a dragon" }, true, CPU);
        // prompt_embeds: text_encoder_2's penultimate states alone; pooled: its projection; negatives: the encoding of "".
        (Tensor Hidden, Tensor Pooled) Reference(string text)
        {
            using var ids = tensor(c.Tokenizer2!.Encode(text, 77).Ids.Select(i => (long)i).ToArray(), [1, 77]);
            using var output = c.TextEncoder2!.Forward(ids, outputHiddenStates: true);
            return (output.HiddenStates[^2].clone(), output.TextEmbeds!.clone());
        }
        var (hidden, pooled) = Reference("a dragon");
        var (emptyHidden, emptyPooled) = Reference("");
        Assert.Equal(new long[] { 1, 77, 32 }, encoded.PromptEmbeds.shape);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(encoded.PromptEmbeds, hidden));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(encoded.PooledPromptEmbeds!, pooled));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(encoded.NegativePromptEmbeds!, emptyHidden));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(encoded.NegativePooledPromptEmbeds!, emptyPooled));
        // diffusers zips [prompt, prompt_2] with the one encoder: prompt_2 (and negative_prompt_2) are not read.
        using var other = encoder.Encode(new StableDiffusionRequest { Prompt = "a dragon", Prompt2 = "a castle", NegativePrompt2 = "blurry" }, true, CPU);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(other.PromptEmbeds, encoded.PromptEmbeds));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(other.NegativePromptEmbeds!, encoded.NegativePromptEmbeds!));
    }

    [Fact]
    public void TheRefinerRunsImageToImageAndInpainting()
    {
        using var img2img = new StableDiffusionXLImg2ImgPipeline(models.Refiner);
        using var image = img2img.Generate(new StableDiffusionImg2ImgRequest { Prompt = "a red circle", Image = Init, NumInferenceSteps = 4, Generator = Seed(2) });
        Assert.Equal((64, 64), (image.Images!.Single().Width, image.Images![0].Height));
        using var inpaint = new StableDiffusionXLInpaintPipeline(models.Refiner);
        using var latents = inpaint.Generate(new StableDiffusionInpaintRequest
        {
            Prompt = "a red circle", Image = Init, MaskImage = Mask, NumInferenceSteps = 4, Height = 64, Width = 64, Generator = Seed(2),
            OutputType = OutputType.Latent,
        });
        Assert.Equal(new long[] { 1, 4, 8, 8 }, latents.Tensor!.shape);
        Assert.True(latents.Tensor.isfinite().all().item<bool>());
    }

    [Theory]
    [InlineData(0.5, 5)]   // cutoff round(1000 - 500) = 500: 901 .. 501
    [InlineData(0.499, 5)] // cutoff 501: the timestep 501 itself still runs (ts >= cutoff)
    [InlineData(0.498, 4)] // cutoff 502: 501 does not
    [InlineData(1.0, 10)]  // outside (0, 1): ignored, as diffusers' check
    public void DenoisingEndStopsAtDiffusersCutoffAndReturnsTheLatentsThere(double denoisingEnd, int steps)
    {
        using var pipe = new StableDiffusionXLPipeline(models.Base);
        var request = new StableDiffusionRequest
        {
            Prompt = "a red circle", NumInferenceSteps = 10, Height = 64, Width = 48, OutputType = OutputType.Latent,
        };
        var seen = new List<float>();
        using var cut = pipe.Generate(request with { Generator = Seed(3), DenoisingEnd = denoisingEnd, CallbackOnStepEnd = c => seen.Add(c.Timestep) });
        Assert.Equal(TenSteps[..steps], seen);
        // The same latents as the full schedule interrupted after that many steps.
        using var interrupted = pipe.Generate(request with { Generator = Seed(3), CallbackOnStepEnd = c => c.Interrupt = c.Step == steps - 1 });
        Assert.Equal(new long[] { 1, 4, 8, 6 }, cut.Tensor!.shape);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(cut.Tensor, interrupted.Tensor!));
    }

    [Fact]
    public void BaseWithDenoisingEndThenImageToImageWithDenoisingStartRunTheComplementaryTimesteps()
    {
        using var basePipe = new StableDiffusionXLPipeline(models.Base);
        using var second = StableDiffusionXLImg2ImgPipeline.FromPipe(basePipe);
        var first = new List<float>();
        var rest = new List<float>();
        using var handoff = basePipe.Generate(new StableDiffusionRequest
        {
            Prompt = "a red circle", NumInferenceSteps = 10, Height = 64, Width = 48, Generator = Seed(4), OutputType = OutputType.Latent,
            DenoisingEnd = 0.6, CallbackOnStepEnd = c => first.Add(c.Timestep),
        });
        var refine = new StableDiffusionImg2ImgRequest
        {
            Prompt = "a red circle", NumInferenceSteps = 10, Image = PipelineImage.FromTensor(handoff.Tensor!), DenoisingStart = 0.6,
            OutputType = OutputType.Latent,
        };
        using var refined = second.Generate(refine with { Generator = Seed(5), CallbackOnStepEnd = c => rest.Add(c.Timestep) });
        // Cutoff round(1000 - 600) = 400: the base runs 901 .. 401, the second pipeline 301 .. 1.
        Assert.Equal(TenSteps[..6], first);
        Assert.Equal(TenSteps[6..], rest);
        // add_noise=False: the handed-over latents are the start as they are, so no draw changes the result...
        using var otherSeed = second.Generate(refine with { Generator = Seed(6) });
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(refined.Tensor!, otherSeed.Tensor!));
        // ...and with the same model and conditioning on both sides, the two halves are the full 10-step run.
        using var full = basePipe.Generate(new StableDiffusionRequest
        {
            Prompt = "a red circle", NumInferenceSteps = 10, Height = 64, Width = 48, Generator = Seed(4), OutputType = OutputType.Latent,
        });
        TensorAssert.Close(refined.Tensor!, full.Tensor!, 1e-6, "ensemble vs full run");
    }

    [Fact]
    public void DenoisingStartMustComeBeforeDenoisingEndAndGivesInpaintingItsSchedule()
    {
        using var inpaint = new StableDiffusionXLInpaintPipeline(models.Base);
        var request = new StableDiffusionInpaintRequest
        {
            Prompt = "x", Image = Init, MaskImage = Mask, NumInferenceSteps = 10, Height = 64, Width = 64, Generator = Seed(1),
            OutputType = OutputType.Latent,
        };
        var error = Assert.Throws<ArgumentException>(() => inpaint.Generate(request with { DenoisingStart = 0.7, DenoisingEnd = 0.7 }));
        Assert.Contains("denoising_start", error.Message);
        var seen = new List<float>();
        using var _ = inpaint.Generate(request with { DenoisingStart = 0.3, DenoisingEnd = 0.8, CallbackOnStepEnd = c => seen.Add(c.Timestep) });
        // Below round(1000 - 300) = 700 and at or above round(1000 - 800) = 200: 601 .. 201; strength plays no part.
        Assert.Equal(new float[] { 601, 501, 401, 301, 201 }, seen);
    }
}
