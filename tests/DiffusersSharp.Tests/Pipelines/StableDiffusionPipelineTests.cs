using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>Behaviour of the SD 1.x and SDXL pipelines on the tiny models: checks, prompt encoding rules, batching,
/// generator lists, callbacks, cancellation, scheduler swaps, the 9-channel inpainting UNet.</summary>
public sealed class StableDiffusionPipelineTests(TinyUNetPipelines models) : IClassFixture<TinyUNetPipelines>
{
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("tiny-sd15/mask.png"));

    private static StableDiffusionRequest Small(long seed = 1) => new()
    {
        Prompt = "a red circle", NumInferenceSteps = 3, Height = 64, Width = 48, Generator = new Generator("cpu").ManualSeed(seed),
    };

    public static TheoryData<string, Func<StableDiffusionComponents, Action>> InvalidCalls => new()
    {
        { "multiples of 8", c => () => new StableDiffusionPipeline(c).Generate(Small() with { Height = 60 }) },
        { "num_inference_steps", c => () => new StableDiffusionPipeline(c).Generate(Small() with { NumInferenceSteps = 0 }) },
        { "guidance_scale", c => () => new StableDiffusionPipeline(c).Generate(Small() with { GuidanceScale = double.NaN }) },
        { "Give a prompt", c => () => new StableDiffusionPipeline(c).Generate(Small() with { Prompt = null }) },
        { "not both", c => () => new StableDiffusionPipeline(c).Generate(Small() with { Generators = [new Generator()] }) },
        { "strength", c => () => new StableDiffusionImg2ImgPipeline(c).Generate(new StableDiffusionImg2ImgRequest { Prompt = "x", Image = Init, Strength = 1.5 }) },
        { "image is required", c => () => new StableDiffusionImg2ImgPipeline(c).Generate(new StableDiffusionImg2ImgRequest { Prompt = "x" }) },
        { "mask_image is required", c => () => new StableDiffusionInpaintPipeline(c).Generate(new StableDiffusionInpaintRequest { Prompt = "x", Image = Init }) },
        { "takes a StableDiffusionRequest", c => () => new StableDiffusionPipeline(c).Generate(new StableDiffusionImg2ImgRequest { Prompt = "x", Image = Init }) },
        { "SDXL model", c => () => new StableDiffusionPipeline(c) },
    };

    [Theory]
    [MemberData(nameof(InvalidCalls))]
    public void InvalidCallsAreClearErrors(string reason, Func<StableDiffusionComponents, Action> call)
    {
        var components = reason == "SDXL model" ? models.Sdxl : models.Sd15;
        var error = Assert.ThrowsAny<ArgumentException>(call(components));
        Assert.Contains(reason, error.Message);
    }

    [Fact]
    public void ComponentsWithoutTextEncodersTakeEmbeddingsAndRefusePrompts()
    {
        // diffusers' text_encoder=None: the pipeline runs on given embeddings, the same generation as with encoders.
        using var bare = new StableDiffusionComponents
        {
            Unet = UNet2DConditionModel.FromPretrained(Fixtures.Path("tiny-sd15/model/unet")),
            Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd15/model/vae")), Device = CPU, Dtype = ScalarType.Float32,
        };
        bare.UseScheduler(models.Sd15.SchedulerConfig);
        using var encoded = models.Sd15.CreatePromptEncoder().Encode(Small(), true, CPU);
        var request = new StableDiffusionRequest
        {
            PromptEmbeds = encoded.PromptEmbeds, NegativePromptEmbeds = encoded.NegativePromptEmbeds, NumInferenceSteps = 3, Height = 64,
            Width = 48, OutputType = OutputType.Latent,
        };
        using var withEncoders = new StableDiffusionPipeline(models.Sd15).Generate(request with { Generator = new Generator("cpu").ManualSeed(4) });
        using var pipe = new StableDiffusionPipeline(bare);
        using var withoutEncoders = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(4) });
        Assert.True(withEncoders.Tensor!.equal(withoutEncoders.Tensor!).all().item<bool>());
        var error = Assert.Throws<ArgumentException>(() => pipe.Generate(Small()));
        Assert.Contains("no text encoder (text_encoder=None): give prompt_embeds", error.Message);
    }

    [Fact]
    public void SdxlPromptEmbedsNeedPooledOnes()
    {
        using var embeds = zeros(1, 77, 64);
        using var pipe = new StableDiffusionXLPipeline(models.Sdxl);
        var error = Assert.Throws<ArgumentException>(() => pipe.Generate(new StableDiffusionRequest { PromptEmbeds = embeds, Height = 64, Width = 64 }));
        Assert.Contains("pooled_prompt_embeds", error.Message);
    }

    [Fact]
    public void ClipSkipRunsTheFinalLayerNormOnAnEarlierLayerForThePositivePromptOnly()
    {
        var c = models.Sd15;
        using var _ = inference_mode();
        var encoder = c.CreatePromptEncoder();
        using var plain = encoder.Encode(new StableDiffusionRequest { Prompt = "a cat" }, true, CPU);
        using var skipped = encoder.Encode(new StableDiffusionRequest { Prompt = "a cat", ClipSkip = 1 }, true, CPU);
        using var ids = tensor(c.Tokenizer!.Encode("a cat", 77).Ids.Select(i => (long)i).ToArray(), [1, 77]);
        using var output = c.TextEncoder!.Forward(ids);
        TensorAssert.Close(plain.PromptEmbeds, output.LastHiddenState, 1e-6);
        // diffusers: final_layer_norm(hidden_states[-(clip_skip + 1)]).
        using var expected = c.TextEncoder!.FinalLayerNorm(output.HiddenStates[^2]);
        TensorAssert.Close(skipped.PromptEmbeds, expected, 1e-6);
        Assert.False(skipped.PromptEmbeds.equal(plain.PromptEmbeds).all().item<bool>());
        Assert.True(skipped.NegativePromptEmbeds!.equal(plain.NegativePromptEmbeds!).all().item<bool>());
    }

    [Fact]
    public void SdxlNegativesAreZerosWithoutANegativePromptAndTheEncodingOfOneOtherwise()
    {
        var c = models.Sdxl;
        Assert.True(c.ForceZerosForEmptyPrompt); // tiny-sdxl's model_index.json
        using var _ = inference_mode();
        var encoder = c.CreatePromptEncoder();
        using var none = encoder.Encode(new StableDiffusionRequest { Prompt = "a dragon" }, true, CPU);
        using var empty = encoder.Encode(new StableDiffusionRequest { Prompt = "a dragon", NegativePrompt = "" }, true, CPU);
        Assert.Equal(new long[] { 1, 77, 64 }, none.PromptEmbeds.shape); // CLIP-L 32 | CLIP-G 32 penultimate states
        Assert.Equal(new long[] { 1, 32 }, none.PooledPromptEmbeds!.shape);
        Assert.Equal(0, none.NegativePromptEmbeds!.abs().sum().item<float>());
        Assert.Equal(0, none.NegativePooledPromptEmbeds!.abs().sum().item<float>());
        Assert.NotEqual(0, empty.NegativePromptEmbeds!.abs().sum().item<float>());
    }

    [Fact]
    public void ImagesPerPromptAndAGeneratorListReproduceSingleImageRuns()
    {
        using var pipe = new StableDiffusionPipeline(models.Sd15);
        using var single = pipe.Generate(Small(11) with { OutputType = OutputType.Latent });
        using var g1 = new Generator("cpu").ManualSeed(11);
        using var g2 = new Generator("cpu").ManualSeed(12);
        using var pair = pipe.Generate(Small() with { Generator = null, Generators = [g1, g2], NumImagesPerPrompt = 2, OutputType = OutputType.Latent });
        Assert.Equal(new long[] { 2, 4, 8, 6 }, pair.Tensor!.shape);
        // Each image's noise comes from its own generator ([1, ...] draws), so the first equals the one-image run.
        TensorAssert.Close(pair.Tensor[..1], single.Tensor!, 1e-5);
        Assert.False(pair.Tensor[0].equal(pair.Tensor[1]).all().item<bool>());
        using var images = pipe.Generate(Small() with { NumImagesPerPrompt = 2 });
        Assert.Equal(2, images.Images!.Count);
        Assert.All(images.Images, i => Assert.Equal((48, 64), (i.Width, i.Height)));
    }

    [Fact]
    public void CallbackSeesEveryStepAndCanInterruptAndCancellationStopsBetweenSteps()
    {
        using var pipe = new StableDiffusionXLPipeline(models.Sdxl);
        var seen = new List<(int Step, float Timestep, long Pooled)>();
        using var result = pipe.Generate(Small() with
        {
            NumInferenceSteps = 5, OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => { seen.Add((c.Step, c.Timestep, c.PooledPromptEmbeds!.shape[0])); c.Interrupt = c.Step == 1; },
        });
        Assert.Equal([0, 1], seen.Select(s => s.Step));
        Assert.All(seen, s => Assert.Equal(2, s.Pooled)); // CFG: negative and positive add_text_embeds
        Assert.True(seen[0].Timestep > seen[1].Timestep);

        using var cts = new CancellationTokenSource();
        int steps = 0;
        Assert.ThrowsAny<OperationCanceledException>(() => pipe.Generate(Small() with
        {
            NumInferenceSteps = 5, CallbackOnStepEnd = _ => { if (++steps == 2) cts.Cancel(); },
        }, null, cts.Token));
        Assert.Equal(2, steps);
    }

    [Fact]
    public void APreviewOfTheLastStepIsTheImageAndUnderOffloadTheUNetComesBack()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions { Offload = OffloadMode.Model });
        var moves = new List<string>();
        components.ModelMoved += m => { if (m.ToExecutionDevice) moves.Add(m.Component); };
        using var pipe = new StableDiffusionPipeline(components);
        var previews = new List<ImageBuffer>();
        using var result = pipe.Generate(Small() with
        {
            CallbackOnStepEnd = c => { if (c.Step == 0 || c.Step == c.TotalSteps - 1) previews.Add(pipe.PreviewImages(c.Latents)[0]); },
        });
        Assert.Equal(2, previews.Count);
        Assert.Equal(result.Images![0].Pixels, previews[1].Pixels); // the last step's latents are the result's
        Assert.NotEqual(previews[0].Pixels, previews[1].Pixels);
        // Each preview brings the VAE to the device and the UNet back for the next step; the final decode ends the call.
        Assert.Equal(["text_encoder", "unet", "vae", "unet", "vae", "unet", "vae"], moves);
    }

    [Fact]
    public void AFloat16SdxlVaeDecodesInFloat32AndStaysFloat16()
    {
        // diffusers' force_upcast: SDXL's VAE overflows in float16, so the pipeline decodes (and encodes) in float32.
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions { Dtype = ScalarType.Float16 });
        Assert.True(components.Vae.Config.ForceUpcast);
        using var pipe = new StableDiffusionXLPipeline(components);
        using var latents = pipe.Generate(Small() with { NumInferenceSteps = 2, OutputType = OutputType.Latent });
        Assert.Equal(ScalarType.Float16, latents.Tensor!.dtype);
        Assert.Equal(ScalarType.Float16, components.Vae.WeightDtype());

        var preview = pipe.PreviewImages(latents.Tensor)[0];
        Assert.Equal(ScalarType.Float16, components.Vae.WeightDtype()); // back after the decode
        // The same decode by hand with the VAE cast to float32: equal, pixel for pixel.
        DiffusersSharp.Pipelines.ModuleMover.CastTo(components.Vae, ScalarType.Float32);
        using (var _ = inference_mode())
        {
            using var z = latents.Tensor.to(ScalarType.Float32) / components.Vae.Config.ScalingFactor;
            using var decoded = components.Vae.Decode(z);
            Assert.Equal(pipe.ImageProcessor.PostprocessToImages(decoded)[0].Pixels, preview.Pixels);
        }
    }

    [Theory]
    [InlineData("txt2img", false)]
    [InlineData("img2img", true)]
    [InlineData("inpaint", true)]
    [InlineData("txt2img", true)]
    public void GenerationsLeaveNoLiveTensors(string mode, bool xl)
    {
        // Every mode of both families, with the ancestral scheduler's per-step draws and a callback that replaces latents.
        var components = xl ? models.Sdxl : models.Sd15;
        var original = (JsonObject)components.SchedulerConfig.DeepClone();
        components.UseScheduler("euler_a");
        try
        {
            StableDiffusionPipelineOutput Run(long seed)
            {
                var generator = new Generator("cpu").ManualSeed(seed);
                var request = new StableDiffusionRequest
                {
                    Prompt = "a red circle", NumInferenceSteps = 3, Height = 64, Width = 48, Generator = generator,
                    CallbackOnStepEnd = c => c.Latents = c.Latents * 1.0,
                };
                var i2i = new StableDiffusionImg2ImgRequest { Prompt = "x", Image = Init, NumInferenceSteps = 4, Generator = generator };
                var inpaint = new StableDiffusionInpaintRequest { Prompt = "x", Image = Init, MaskImage = Mask, NumInferenceSteps = 3, Height = 64, Width = 64, Generator = generator };
                using StableDiffusionPipelineBase pipe = (mode, xl) switch
                {
                    ("img2img", true) => new StableDiffusionXLImg2ImgPipeline(components),
                    ("inpaint", true) => new StableDiffusionXLInpaintPipeline(components),
                    (_, true) => new StableDiffusionXLPipeline(components),
                    ("img2img", false) => new StableDiffusionImg2ImgPipeline(components),
                    ("inpaint", false) => new StableDiffusionInpaintPipeline(components),
                    _ => new StableDiffusionPipeline(components),
                };
                using (generator)
                    return pipe switch
                    {
                        StableDiffusionXLImg2ImgPipeline p => p.Generate(i2i),
                        StableDiffusionXLInpaintPipeline p => p.Generate(inpaint),
                        StableDiffusionXLPipeline p => p.Generate(request),
                        StableDiffusionImg2ImgPipeline p => p.Generate(i2i),
                        StableDiffusionInpaintPipeline p => p.Generate(inpaint),
                        StableDiffusionPipeline p => p.Generate(request),
                        _ => throw new InvalidOperationException(),
                    };
            }
            Run(1).Dispose(); // warm-up: allocator pools, lazy tables
            long before = LiveTensors.Count();
            for (int i = 0; i < 5; i++) Run(i).Dispose();
            Assert.Equal(before, LiveTensors.Count());
        }
        finally
        {
            components.UseScheduler(original);
        }
    }

    [Fact]
    public void UseSchedulerTakesShortNamesAndClassesAndRefusesOthers()
    {
        var c = models.Sd15;
        var original = (JsonObject)c.SchedulerConfig.DeepClone();
        try
        {
            Assert.Equal("PNDMScheduler", c.SchedulerClassName);
            c.UseScheduler("dpmpp_2m_karras");
            Assert.Equal("DPMSolverMultistepScheduler", c.SchedulerClassName);
            Assert.True(c.SchedulerConfig["use_karras_sigmas"]!.GetValue<bool>());
            Assert.Equal(0.012, c.SchedulerConfig["beta_end"]!.GetValue<double>()); // the model's schedule is kept
            c.UseScheduler("EulerAncestralDiscreteScheduler");
            using (var scheduler = c.CreateScheduler()) Assert.Equal("EulerAncestralDiscreteScheduler", scheduler.ClassName);
            var error = Assert.Throws<ArgumentException>(() => c.UseScheduler("no_such_sampler"));
            Assert.Contains("euler_a", error.Message);
            Assert.Equal("EulerAncestralDiscreteScheduler", c.SchedulerClassName); // a refused name changes nothing
        }
        finally
        {
            c.UseScheduler(original);
        }
    }

    [Fact]
    public void ANineChannelInpaintingUNetGetsLatentsMaskAndMaskedImageLatents()
    {
        // A random 9-channel UNet in place of tiny-sd15's 4-channel one (the SD 1.5 inpainting checkpoints' layout).
        var c = models.Sd15;
        using var unet = new UNet2DConditionModel(c.Unet.Config with { InChannels = 9 });
        unet.eval();
        var components = new StableDiffusionComponents
        {
            Unet = unet, Vae = c.Vae, TextEncoder = c.TextEncoder, Tokenizer = c.Tokenizer, Device = CPU, Dtype = ScalarType.Float32,
        };
        components.UseScheduler(c.SchedulerConfig);
        var inputs = new List<long[]>();
        using var pipe = new StableDiffusionInpaintPipeline(components);
        using var result = pipe.Generate(new StableDiffusionInpaintRequest
        {
            Prompt = "x", Image = Init, MaskImage = Mask, NumInferenceSteps = 2, Height = 64, Width = 64, OutputType = OutputType.Latent,
            Generator = new Generator("cpu").ManualSeed(3), CallbackOnStepEnd = ctx => inputs.Add(ctx.Latents.shape),
        });
        Assert.Equal(new long[] { 1, 4, 8, 8 }, result.Tensor!.shape);
        Assert.Equal(3, inputs.Count); // PNDM (PLMS) runs 2 steps as 3 timestep entries, its first one twice
        Assert.All(inputs, shape => Assert.Equal(new long[] { 1, 4, 8, 8 }, shape));
        // These components borrow the fixture's models: they are not disposed here (that would free the fixture's).
    }
}
