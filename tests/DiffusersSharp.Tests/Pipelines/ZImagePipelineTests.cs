using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The Z-Image pipelines beyond the parity cases: loading a folder without its text encoder, from_pipe, offload,
/// validation before any compute, cancellation, callbacks (interrupt, replaced latents, previews, the guidance scale),
/// generator lists and image inputs. Components: the tiny transformer and schedulers of local-diffusers/z-image and
/// tiny-sd3's VAE; prompt embeddings from that fixture. Prompt strings through the Qwen3 text encoder: ZImagePromptTests.
/// </summary>
public sealed class ZImagePipelineTests(ITestOutputHelper log) : IDisposable
{
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/z-image/expected.safetensors");
    private readonly ZImageComponents _components = LocalDiffusersZImage.Components();

    private Tensor E(string key) => _expected[key];

    private ZImageRequest Small(long seed = 1) => new()
    {
        PromptEmbeds = [E("in.prompt_embeds.0")], Height = 32, Width = 48, NumInferenceSteps = 2, GuidanceScale = 0.0,
        Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
    };

    private ZImageRequest Guided(long seed = 1) => Small(seed) with { NegativePromptEmbeds = [E("in.negative_prompt_embeds.0")], GuidanceScale = 4.0 };

    private static ImageBuffer InitImage() => ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));

    [Fact]
    public void AFolderLoadsWithoutItsTextEncoderAndOffloadGivesTheSameImage()
    {
        string dir = Directory.CreateTempSubdirectory("zimage-folder").FullName;
        try
        {
            LocalDiffusersZImage.WriteFolder(dir);
            Assert.True(ZImageComponents.IsSupportedPipeline(ModelIndex.Read(dir).ClassName));
            using var pipe = new ZImagePipeline(_components);
            using var a = pipe.Generate(Small(3) with { OutputType = OutputType.Tensor });
            using var loaded = ZImagePipeline.FromPretrained(dir, new PipelineLoadOptions { Offload = OffloadMode.Model, LoadTextEncoders = false });
            var moves = new List<string>();
            loaded.Components.ModelMoved += m => moves.Add(m.ToString());
            using var b = loaded.Generate(Small(3) with { OutputType = OutputType.Tensor });
            TensorAssert.Close(b.Tensor!, a.Tensor!, 1e-6, "loaded, offloaded pipeline");
            log.WriteLine(string.Join("\n", moves));
            Assert.Equal(["transformer -> cpu", "transformer <- cpu", "vae -> cpu", "vae <- cpu"], moves);
            var e = Assert.Throws<InvalidDataException>(() => ZImageComponents.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions()));
            Assert.Contains("ZImagePipeline", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void FromPipeSharesTheComponents()
    {
        var t2i = new ZImagePipeline(_components);
        using var i2i = ZImageImg2ImgPipeline.FromPipe(t2i);
        using var again = ZImagePipeline.FromPipe(i2i);
        Assert.Same(t2i.Components, i2i.Components);
        t2i.Dispose(); // the other pipelines keep the models alive
        using var result = i2i.Generate(new ZImageImg2ImgRequest
        {
            PromptEmbeds = [E("in.prompt_embeds.0")], Image = InitImage(), Strength = 0.5, NumInferenceSteps = 2, GuidanceScale = 0,
            Generator = new Generator("cpu").ManualSeed(1),
        });
        Assert.Equal((64, 64), (result.Images![0].Width, result.Images[0].Height));
    }

    [Fact]
    public void PromptStringsAreRefusedWithoutATextEncoder()
    {
        using var pipe = new ZImagePipeline(_components);
        var e = Assert.Throws<ArgumentException>(() => pipe.Generate(Small() with { PromptEmbeds = null, Prompt = "a cat" }));
        Assert.Contains("Qwen3 text encoder", e.Message);
        e = Assert.Throws<ArgumentException>(() => pipe.Generate(Guided() with { NegativePromptEmbeds = null, NegativePrompt = "blurry" }));
        Assert.Contains("Qwen3 text encoder", e.Message);
        e = Assert.Throws<ArgumentException>(() => pipe.Generate(Guided() with { NegativePromptEmbeds = null }));
        Assert.Contains("negative_prompt_embeds must be given too", e.Message);
    }

    [Fact]
    public void InvalidRequestsAreRejectedBeforeCompute()
    {
        using var pipe = new ZImagePipeline(_components);
        var ok = Small();
        void Refused(ZImageRequest r, string message) => Assert.Contains(message, Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message);
        Refused(ok with { Height = 40 }, "multiples of 16");
        Refused(ok with { Width = 0 }, "multiples of 16");
        Refused(ok with { NumInferenceSteps = 0 }, "num_inference_steps");
        Refused(ok with { Sigmas = [] }, "sigmas must not be empty");
        Refused(ok with { Sigmas = [1f, float.NaN], NumInferenceSteps = null }, "finite");
        Refused(ok with { Sigmas = [1f, 0.5f, 0.2f] }, "3 sigmas were given for 2 inference steps");
        Refused(ok with { GuidanceScale = double.NaN }, "guidance_scale");
        Refused(ok with { CfgNormalization = -1 }, "cfg_normalization");
        Refused(ok with { CfgTruncation = double.NaN }, "cfg_truncation");
        Refused(ok with { NumImagesPerPrompt = 0 }, "num_images_per_prompt");
        Refused(ok with { MaxSequenceLength = 0 }, "max_sequence_length");
        Refused(ok with { PromptEmbeds = null }, "Give a prompt or prompt_embeds");
        Refused(ok with { Prompt = "x" }, "not both");
        Refused(ok with { PromptEmbeds = [] }, "empty list");
        Refused(ok with { PromptEmbeds = [zeros(5, 47)] }, "[L, 48]");
        Refused(ok with { PromptEmbeds = [zeros(0, 48)] }, "at least one token");
        Refused(ok with { PromptEmbeds = [zeros(1, 5, 48)] }, "[L, 48]");
        Refused(ok with { PromptEmbeds = [zeros(300, 48)] }, "axes_lens"); // 320 padded caption positions, axes_lens[0] 256
        Refused(ok with { Height = 528 }, "axes_lens"); // 33 patch rows, axes_lens[1] 32
        Refused(Guided() with { NegativePromptEmbeds = [E("in.negative_prompt_embeds.0"), E("in.negative_prompt_embeds.1")] }, "one per prompt");
        Refused(Guided() with { NegativePromptEmbeds = [zeros(3, 40)] }, "negative_prompt_embeds[0]");
        Refused(Guided() with { NegativePrompt = "x" }, "not both");
        Refused(ok with { NegativePrompt = new[] { "a", "b" } }, "give one per prompt");
        Refused(ok with { Generators = [new Generator("cpu"), new Generator("cpu")] }, "generators");
        Refused(ok with { Generators = [new Generator("cpu")] }, "not both");
        Refused(ok with { Latents = zeros(1, 16, 4, 4) }, "latents must be [1, 16, 4, 6]");
        Refused(ok with { OutputType = (OutputType)7 }, "output type");

        using var i2i = new ZImageImg2ImgPipeline(_components);
        var image = new ZImageImg2ImgRequest { PromptEmbeds = [E("in.prompt_embeds.0")], Image = InitImage(), NumInferenceSteps = 4, GuidanceScale = 0 };
        void RefusedI2I(ZImageImg2ImgRequest r, string message) => Assert.Contains(message, Assert.Throws<ArgumentException>(() => i2i.Generate(r)).Message);
        RefusedI2I(image with { Strength = 1.5 }, "strength");
        RefusedI2I(image with { Strength = double.NaN }, "strength");
        RefusedI2I(image with { Strength = 0.0 }, "leaves 0 steps");
        RefusedI2I(image with { Image = null }, "image is required");
        RefusedI2I(image with { Height = 48 }, "64x64 after preprocessing");
        RefusedI2I(image with { Image = PipelineImage.FromTensor(zeros(1, 16, 8, 8)) }, "must be RGB");
        RefusedI2I(image with { Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")).ToGrayscale() }, "must be RGB");
        RefusedI2I(image with { Image = PipelineImage.FromTensor(zeros(3, 3, 64, 64)) }, "Cannot repeat 3 images");
    }

    [Fact]
    public void CancellationStopsWithinOneStepAndFreesMemory()
    {
        using var pipe = new ZImagePipeline(_components);
        using var cts = new CancellationTokenSource();
        pipe.Generate(Guided()).Dispose(); // warm-up
        long before = LiveTensors.Count();
        int steps = 0;
        Assert.Throws<OperationCanceledException>(() => pipe.Generate(Guided() with
        {
            NumInferenceSteps = 6, CallbackOnStepEnd = c => { steps++; if (c.Step == 2) cts.Cancel(); },
        }, null, cts.Token));
        Assert.Equal(3, steps);
        Assert.Equal(before, LiveTensors.Count());
    }

    [Fact]
    public void CallbacksSeeTheListsCanReplaceLatentsDecodePreviewsAndInterrupt()
    {
        using var pipe = new ZImagePipeline(_components);
        pipe.Generate(Guided()).Dispose(); // warm-up
        long before = LiveTensors.Count();
        int previews = 0, steps = 0;
        var progress = new List<PipelineProgress>();
        using (var zeroed = pipe.Generate(Guided() with
        {
            PromptEmbeds = [E("in.prompt_embeds.0"), E("in.prompt_embeds.1")],
            NegativePromptEmbeds = [E("in.negative_prompt_embeds.0"), E("in.negative_prompt_embeds.1")],
            NumImagesPerPrompt = 2, NumInferenceSteps = 4,
            CallbackOnStepEnd = c =>
            {
                steps++;
                // diffusers' lists after the repeat per image: [p0, p0, p1, p1]; PromptEmbeds shows them padded to 40 tokens.
                Assert.Equal([7L, 7, 40, 40], c.PromptEmbedsList!.Select(e => e.shape[0]));
                Assert.Equal([3L, 3, 12, 12], c.NegativePromptEmbedsList!.Select(e => e.shape[0]));
                Assert.Equal([4L, 40, 48], c.PromptEmbeds.shape);
                var images = pipe.PreviewImages(c.Latents);
                previews += images.Count;
                Assert.Equal((48, 32), (images[0].Width, images[0].Height));
                c.Latents = zeros_like(c.Latents);
                c.Interrupt = c.Step == 1;
            },
        }, new Progress(progress)))
        {
            using var scope = NewDisposeScope();
            Assert.Equal([4L, 16, 4, 6], zeroed.Tensor!.shape);
            Assert.True(zeroed.Tensor!.isfinite().all().item<bool>());
            Assert.Equal(0.0, zeroed.Tensor!.abs().max().item<float>()); // the last step's latents were replaced by zeros
        }
        Assert.Equal(2, steps);
        Assert.Equal(8, previews);
        Assert.Equal(before, LiveTensors.Count());
        Assert.Contains(new PipelineProgress("denoise", 2, 4), progress);

        var replaced = Assert.Throws<InvalidOperationException>(() => pipe.Generate(Guided() with { CallbackOnStepEnd = c => c.PromptEmbeds = zeros(1, 7, 48) }));
        Assert.Contains("PromptEmbedsList", replaced.Message);
        var raised = Assert.Throws<InvalidOperationException>(() => pipe.Generate(Small() with { CallbackOnStepEnd = c => c.GuidanceScale = 5 }));
        Assert.Contains("negative embedding", raised.Message);
    }

    /// <summary>A progress sink that records synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class Progress(List<PipelineProgress> sink) : IProgress<PipelineProgress>
    {
        public void Report(PipelineProgress value) => sink.Add(value);
    }

    [Fact]
    public void ACallbackDroppingTheGuidanceScaleEndsCfgAsTruncationDoes()
    {
        // Shift 3 over 3 steps: sigmas 1, 0.75, 0 (the last step, at sigma 0, moves nothing), so t_norm is 0, 0.25, 1.
        // cfg_truncation 0.2 drops CFG from step 1 on; so does a callback setting the guidance scale to 0 after step 0 (as
        // diffusers' callbacks set pipe._guidance_scale).
        using var pipe = new ZImagePipeline(_components);
        using var truncated = pipe.Generate(Guided(9) with { NumInferenceSteps = 3, CfgTruncation = 0.2 });
        using var dropped = pipe.Generate(Guided(9) with { NumInferenceSteps = 3, CallbackOnStepEnd = c => c.GuidanceScale = 0 });
        using var full = pipe.Generate(Guided(9) with { NumInferenceSteps = 3 });
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(dropped.Tensor!, truncated.Tensor!));
        Assert.True(TensorAssert.MaxAbsDiff(full.Tensor!, truncated.Tensor!) > 1e-3);
    }

    [Fact]
    public void CfgNormalizationAndTruncationChangeTheFixtureCases()
    {
        // The parity cases would not notice an ignored option unless it changes their result: it does, far above the bound.
        using var pipe = new ZImagePipeline(_components);
        var request = new ZImageRequest
        {
            PromptEmbeds = [E("in.prompt_embeds.0")], NegativePromptEmbeds = [E("in.negative_prompt_embeds.0")], Height = 64, Width = 64,
            GuidanceScale = 4.0, OutputType = OutputType.Latent,
        };
        using var unnormalized = pipe.Generate(request with { NumInferenceSteps = 3, Generator = new Generator("cpu").ManualSeed(11) });
        using var untruncated = pipe.Generate(request with { NumInferenceSteps = 6, Generator = new Generator("cpu").ManualSeed(13) });
        double a = TensorAssert.MaxAbsDiff(unnormalized.Tensor!, E("t2i_cfg_norm.latents")), b = TensorAssert.MaxAbsDiff(untruncated.Tensor!, E("t2i_cfg_trunc.latents"));
        log.WriteLine($"without normalization {a:G3}, without truncation {b:G3} from the fixture");
        Assert.True(a > 1e-2 && b > 1e-2);
    }

    [Fact]
    public void OneGeneratorPerImageGivesEachImageItsOwnNoise()
    {
        using var pipe = new ZImagePipeline(_components);
        using var both = pipe.Generate(Small() with
        {
            Generator = null, NumImagesPerPrompt = 2, Generators = [new Generator("cpu").ManualSeed(5), new Generator("cpu").ManualSeed(6)],
        });
        using var five = pipe.Generate(Small(5));
        using var six = pipe.Generate(Small(6));
        Assert.True(TensorAssert.MaxAbsDiff(both.Tensor![0], five.Tensor![0]) < 1e-5);
        Assert.True(TensorAssert.MaxAbsDiff(both.Tensor![1], six.Tensor![0]) < 1e-5);
    }

    [Fact]
    public void GivenLatentsReplaceTheNoise()
    {
        using var pipe = new ZImagePipeline(_components);
        using var noise = new Generator("cpu").ManualSeed(4).Randn([1, 16, 4, 6], ScalarType.Float32, CPU);
        using var drawn = pipe.Generate(Small(4));
        using var given = pipe.Generate(Small(77) with { Latents = noise });
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(drawn.Tensor!, given.Tensor!));
        Assert.True(noise.isfinite().all().item<bool>()); // the caller's tensor is still alive
    }

    [Fact]
    public void ImageToImageTakesTensorsAsPillowImagesAndLatentsAsTheStart()
    {
        using var pipe = new ZImageImg2ImgPipeline(_components);
        var request = new ZImageImg2ImgRequest
        {
            PromptEmbeds = [E("in.prompt_embeds.0")], Image = InitImage(), Strength = 0.6, NumInferenceSteps = 5, GuidanceScale = 0,
            Generator = new Generator("cpu").ManualSeed(123), OutputType = OutputType.Latent,
        };
        using var fromImage = pipe.Generate(request);
        TensorAssert.Close(fromImage.Tensor!, E("i2i.latents"), 1e-5, "i2i latents");
        var pixels = InitImage();
        using var asTensor = tensor(pixels.Pixels.Select(b => b / 255f).ToArray(), [1, 64, 64, 3]).permute(0, 3, 1, 2).contiguous();
        using var fromTensor = pipe.Generate(request with { Image = PipelineImage.FromTensor(asTensor), Generator = new Generator("cpu").ManualSeed(123) });
        Assert.True(TensorAssert.MaxAbsDiff(fromTensor.Tensor!, fromImage.Tensor!) < 1e-6);
        // Given latents are the start itself (diffusers skips the encode and the noise): nothing is drawn, whatever the generator.
        using var start = zeros(1, 16, 8, 8);
        using var fromLatents = pipe.Generate(request with { Image = null, Latents = start, Height = 64, Width = 64, Strength = 1.0, NumInferenceSteps = 1, Generator = null });
        using var direct = pipe.Generate(request with { Image = null, Latents = start, Height = 64, Width = 64, Strength = 1.0, NumInferenceSteps = 1, Generator = new Generator("cpu").ManualSeed(1) });
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(fromLatents.Tensor!, direct.Tensor!));
    }

    [Fact]
    public void BFloat16ComponentsRunBothPipelines()
    {
        // A sanity bound, not parity: bfloat16 weights with float32 embeddings, noise, CFG and scheduler, as diffusers runs
        // them. Image-to-image is not compared with float32: a bfloat16 VAE draws its posterior sample in bfloat16, which
        // on the CPU is another random stream than float32's (torch's too), so only its determinism is checked.
        using var half = new ZImageComponents
        {
            Transformer = DiffusersSharp.Models.Transformers.ZImageTransformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/z-image/transformer"), ScalarType.BFloat16),
            Vae = DiffusersSharp.Models.Autoencoders.AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd3/model/vae"), ScalarType.BFloat16),
            SchedulerConfig = _components.SchedulerConfig, Device = CPU, Dtype = ScalarType.BFloat16,
        };
        using var t2i = new ZImagePipeline(half);
        using var i2i = new ZImageImg2ImgPipeline(half);
        using var latents = t2i.Generate(Guided(7) with { Height = 64, Width = 64, NumInferenceSteps = 4 });
        Assert.Equal(ScalarType.Float32, latents.Tensor!.dtype);
        using var expected = E("t2i_cfg.latents").to(ScalarType.Float64);
        double relative = (latents.Tensor!.to(ScalarType.Float64) - expected).norm().item<double>() / expected.norm().item<double>();
        log.WriteLine($"bfloat16: t2i_cfg latents relative L2 {relative:G3} vs diffusers' float32");
        Assert.True(relative < 5e-2);
        var request = new ZImageImg2ImgRequest
        {
            PromptEmbeds = [E("in.prompt_embeds.0")], Image = InitImage(), Strength = 0.6, NumInferenceSteps = 5, GuidanceScale = 0,
            OutputType = OutputType.Latent,
        };
        using var first = i2i.Generate(request with { Generator = new Generator("cpu").ManualSeed(123) });
        using var second = i2i.Generate(request with { Generator = new Generator("cpu").ManualSeed(123) });
        Assert.True(first.Tensor!.isfinite().all().item<bool>());
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(first.Tensor!, second.Tensor!));
    }

    /// <summary>The scheduler as the pipelines set it: sigma_min 0, so Turbo's static shift 3 ends at sigma 0 before the terminal 0.</summary>
    [Fact]
    public void TheScheduleRunsDownToSigmaZero()
    {
        var config = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Fixtures.Path("local-diffusers/z-image/scheduler/scheduler_config.json"));
        using var plain = new FlowMatchEulerDiscreteScheduler(config);
        using var zimage = new FlowMatchEulerDiscreteScheduler(config) { SigmaMin = 0 };
        plain.SetTimesteps(4);
        zimage.SetTimesteps(4);
        // linspace(1000, 0, 4) / 1000 = 1, 2/3, 1/3, 0, shifted by 3 s / (1 + 2 s): 1, 6/7, 3/5, 0.
        Assert.Equal([1f, (float)(6.0 / 7), 0.6f, 0f, 0f], zimage.SigmaValues);
        Assert.NotEqual(0f, plain.SigmaValues[3]);
        Assert.Throws<ArgumentOutOfRangeException>(() => new FlowMatchEulerDiscreteScheduler(config) { SigmaMin = double.NaN });
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _components.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
