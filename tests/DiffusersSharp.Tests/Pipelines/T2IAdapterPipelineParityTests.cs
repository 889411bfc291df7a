using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sd15 and tiny-sdxl loaded with the tiny T2I-Adapters of fixture local-diffusers/t2i-adapter.</summary>
public sealed class LocalDiffusersAdapters : IDisposable
{
    /// <summary>Loads them.</summary>
    public LocalDiffusersAdapters()
    {
        static string Adapter(string name) => Fixtures.Path($"local-diffusers/t2i-adapter/{name}");
        var options = new PipelineLoadOptions();
        Sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), options, [], [Adapter("full")]);
        Sd15Multi = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), options, [], [Adapter("full"), Adapter("light_gray")]);
        Sd15Light = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), options, [], [Adapter("light")]);
        Sdxl = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), options, [], [Adapter("xl")]);
    }

    /// <summary>tiny-sd15 + the full adapter.</summary>
    public StableDiffusionComponents Sd15 { get; }

    /// <summary>tiny-sd15 + the full adapter and the grayscale light adapter (diffusers' MultiAdapter).</summary>
    public StableDiffusionComponents Sd15Multi { get; }

    /// <summary>tiny-sd15 + the light adapter.</summary>
    public StableDiffusionComponents Sd15Light { get; }

    /// <summary>tiny-sdxl + the XL adapter.</summary>
    public StableDiffusionComponents Sdxl { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Sd15.Dispose();
        Sd15Multi.Dispose();
        Sd15Light.Dispose();
        Sdxl.Dispose();
    }
}

/// <summary>
/// StableDiffusionAdapterPipeline and StableDiffusionXLAdapterPipeline against diffusers v0.36.0's own on the tiny models
/// (fixture local-diffusers/t2i-adapter, made on this project's machine by tools/reference/t2i_adapter.py; see its
/// README): the size from the adapter image, a conditioning scale, two adapters at once (an RGB and a grayscale image
/// resized to 64 x 64, per-adapter weights), the light adapter, and SDXL with adapter_conditioning_factor 0.5. Prompt
/// embeddings are the fixture's random inputs (no CLIP ran in Python). Float32 on the CPU; every step's latents, the
/// final latents and the decoded image are compared, and the timesteps exactly. Measured (max |diff|): sd15 latents
/// 1.7e-5 on latents of 22.2, image 8.1e-7; sd15_multi 1.3e-5 on 22.9, 1.0e-6; sd15_light 1.3e-5 on 15.8, 1.1e-6; sdxl
/// 1.5e-5 on 23.0, 9.5e-7: at most 8.2e-7 of the latents' size. The bound, 1e-5 x max(1, max |expected|), is the
/// ControlNet pipelines'.
/// </summary>
public sealed class T2IAdapterPipelineParityTests(LocalDiffusersAdapters models, ITestOutputHelper output) : IClassFixture<LocalDiffusersAdapters>
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/t2i-adapter/expected.safetensors");

    private static ImageBuffer Sketch => ImageFile.LoadRgb(Fixtures.Path("local-diffusers/t2i-adapter/sketch.png"));

    private static ImageBuffer Depth => ImageFile.Load(Fixtures.Path("local-diffusers/t2i-adapter/depth.png")); // L, as diffusers read it

    private static StableDiffusionAdapterRequest Sd15(StableDiffusionAdapterRequest r) => r with
    {
        PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.neg_prompt_embeds"],
    };

    private static StableDiffusionAdapterRequest Sdxl(StableDiffusionAdapterRequest r) => r with
    {
        PromptEmbeds = Expected["in.sdxl.prompt_embeds"], PooledPromptEmbeds = Expected["in.sdxl.pooled"],
        NegativePromptEmbeds = Expected["in.sdxl.neg_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.sdxl.neg_pooled"],
    };

    private void Check(string name, StableDiffusionAdapterRequest request, long seed, Func<StableDiffusionAdapterRequest, StableDiffusionPipelineOutput> generate) =>
        StepParity.Check(output, Expected, Tolerance, name, request, seed, generate);

    /// <summary>sd15: 8 steps (PNDM: 9 timesteps), the size from the image (64 x 80); sd15_multi: MultiAdapter of the full
    /// adapter and the grayscale light adapter; sd15_light: the light adapter.</summary>
    [Fact]
    public void Sd15MatchesDiffusers()
    {
        using var pipe = new StableDiffusionAdapterPipeline(models.Sd15);
        Check("sd15", Sd15(new() { Image = Sketch, NumInferenceSteps = 8, AdapterConditioningScale = 0.8 }), 11, r => pipe.Generate(r));
        using var multi = new StableDiffusionAdapterPipeline(models.Sd15Multi);
        Check("sd15_multi", Sd15(new()
        {
            Images = [Sketch, Depth], Height = 64, Width = 64, NumInferenceSteps = 6, GuidanceScale = 6.0, AdapterConditioningScales = [0.7, 1.3],
        }), 12, r => multi.Generate(r));
        using var light = new StableDiffusionAdapterPipeline(models.Sd15Light);
        Check("sd15_light", Sd15(new() { Image = Sketch, NumInferenceSteps = 5, AdapterConditioningScale = 1.2 }), 13, r => light.Generate(r));
    }

    /// <summary>sdxl: 8 steps (Euler), adapter_conditioning_factor 0.5: the adapter steers the first 4.</summary>
    [Fact]
    public void SdxlMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLAdapterPipeline(models.Sdxl);
        Check("sdxl", Sdxl(new() { Image = Sketch, NumInferenceSteps = 8, AdapterConditioningScale = 0.9, AdapterConditioningFactor = 0.5 }), 21,
            r => pipe.Generate(r));
    }

    /// <summary>The adapter changes the result (the fixture is not the plain pipeline's), and a scale of 0 removes it.</summary>
    [Fact]
    public void TheAdapterSteersAndScaleZeroIsThePlainPipeline()
    {
        using var pipe = new StableDiffusionAdapterPipeline(models.Sd15);
        using var plainPipe = new StableDiffusionPipeline(models.Sd15);
        StableDiffusionAdapterRequest Request(double scale) => Sd15(new()
        {
            Image = Sketch, NumInferenceSteps = 3, AdapterConditioningScale = scale, Generator = new Generator("cpu").ManualSeed(5), OutputType = OutputType.Latent,
        });
        using var steered = pipe.Generate(Request(0.8));
        using var zero = pipe.Generate(Request(0));
        using var plain = plainPipe.Generate(new StableDiffusionRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.neg_prompt_embeds"], Height = 64, Width = 80,
            NumInferenceSteps = 3, Generator = new Generator("cpu").ManualSeed(5), OutputType = OutputType.Latent,
        });
        Assert.True(TensorAssert.MaxAbsDiff(steered.Tensor!, plain.Tensor!) > 1e-2);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(zero.Tensor!, plain.Tensor!));
    }

    /// <summary>A tensor image is used as it is (diffusers' _preprocess_adapter_image returns it): the preprocessed sketch
    /// as a tensor gives the image's result, and its size is the default output size.</summary>
    [Fact]
    public void ATensorImageIsTakenAsItIs()
    {
        using var pipe = new StableDiffusionAdapterPipeline(models.Sd15);
        var sketch = Sketch;
        using var pixels = tensor(sketch.Pixels.Select(b => b / 255f).ToArray(), [1, sketch.Height, sketch.Width, 3]).permute(0, 3, 1, 2).contiguous();
        StableDiffusionAdapterRequest Request(PipelineImage image) => Sd15(new()
        {
            Image = image, NumInferenceSteps = 2, Generator = new Generator("cpu").ManualSeed(7), OutputType = OutputType.Latent,
        });
        using var fromImage = pipe.Generate(Request(sketch));
        using var fromTensor = pipe.Generate(Request(PipelineImage.FromTensor(pixels)));
        Assert.Equal([1, 4, 8, 10], fromTensor.Tensor!.shape);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(fromTensor.Tensor!, fromImage.Tensor!));
    }

    [Fact]
    public void BadAdapterInputsAreRejectedBeforeCompute()
    {
        using var pipe = new StableDiffusionAdapterPipeline(models.Sd15);
        using var multi = new StableDiffusionAdapterPipeline(models.Sd15Multi);
        using var xl = new StableDiffusionXLAdapterPipeline(models.Sdxl);
        var reports = new List<PipelineProgress>();
        var progress = new SynchronousProgress(reports.Add);
        var request = Sd15(new() { Image = Sketch, NumInferenceSteps = 2 });
        string Refused(Action run)
        {
            var message = Assert.Throws<ArgumentException>(run).Message;
            Assert.Empty(reports); // nothing ran: no encode, no step
            return message;
        }
        Assert.Contains("image (the adapter image) is required", Refused(() => pipe.Generate(request with { Image = null }, progress)));
        Assert.Contains("not both", Refused(() => pipe.Generate(request with { Images = [Sketch] }, progress)));
        Assert.Contains("2 adapter(s) take 2 image(s)", Refused(() => multi.Generate(request, progress)));
        Assert.Contains("adapter_conditioning_scale has 1 element(s)", Refused(() => multi.Generate(request with
        {
            Image = null, Images = [Sketch, Depth], AdapterConditioningScales = [0.5],
        }, progress)));
        Assert.Contains("give a grayscale (L) image", Refused(() => multi.Generate(request with { Image = null, Images = [Sketch, Sketch] }, progress)));
        Assert.Contains("give an RGB image", Refused(() => pipe.Generate(request with { Image = Depth }, progress)));
        Assert.Contains("must be a finite number", Refused(() => pipe.Generate(request with { AdapterConditioningScale = double.NaN }, progress)));
        Assert.Contains("used as it is (not resized)", Refused(() => pipe.Generate(request with { Image = PipelineImage.FromTensor(zeros(1, 3, 64, 64)), Width = 80 }, progress)));
        Assert.Contains("2 prompt(s)", Refused(() => pipe.Generate(request with
        {
            PromptEmbeds = cat([Expected["in.sd15.prompt_embeds"], Expected["in.sd15.prompt_embeds"]]), NegativePromptEmbeds = null,
        }, progress)));
        Assert.Contains("adapter_conditioning_factor is not a parameter", Refused(() => pipe.Generate(request with { AdapterConditioningFactor = 0.5 }, progress)));
        Assert.Contains("guidance_rescale is not a parameter", Refused(() => pipe.Generate(request with { GuidanceRescale = 0.7 }, progress)));
        Assert.Contains("no IP-Adapter inputs", Refused(() => pipe.Generate(request with { IpAdapterImageEmbeds = [zeros(2, 1, 8)] }, progress)));
        Assert.Contains("multiples of 8", Refused(() => pipe.Generate(request with { Height = 60 }, progress)));
        var xlRequest = Sdxl(new() { Image = Sketch, NumInferenceSteps = 2 });
        Assert.Contains("multiples of the adapter's downscale_factor 16", Refused(() => xl.Generate(xlRequest with { Height = 72 }, progress)));
        Assert.Contains("must be a finite number", Refused(() => xl.Generate(xlRequest with { AdapterConditioningFactor = double.PositiveInfinity }, progress)));

        // Without --height the size is the image's rounded down to the downscale factor (diffusers' _default_height_width): 16 for SDXL.
        using var rounded = xl.Generate(xlRequest with
        {
            Image = Sketch.Resize(88, 70, ResampleFilter.Lanczos), NumInferenceSteps = 1, Generator = new Generator("cpu").ManualSeed(1), OutputType = OutputType.Latent,
        });
        Assert.Equal([1, 4, 64 / 8, 80 / 8], rounded.Tensor!.shape);
    }

    [Fact]
    public void ComponentsWithoutAFittingAdapterAreRefused()
    {
        using var plain = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        Assert.Contains("no T2I-Adapter", Assert.Throws<ArgumentException>(() => new StableDiffusionAdapterPipeline(plain)).Message);
        Assert.Throws<ArgumentException>(() => new StableDiffusionXLAdapterPipeline(models.Sd15));
        var e = Assert.Throws<ArgumentException>(() => StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions(), [],
            [Fixtures.Path("local-diffusers/t2i-adapter/full")]));
        Assert.Contains("does not fit this UNet", e.Message);
    }

    [Fact]
    public void ProgressCancellationAndModelOffloadRunAsInTheOtherPipelines()
    {
        using var pipe = new StableDiffusionAdapterPipeline(models.Sd15);
        var reports = new List<PipelineProgress>();
        using var cts = new CancellationTokenSource();
        int steps = 0;
        Assert.ThrowsAny<OperationCanceledException>(() => pipe.Generate(Sd15(new()
        {
            Image = Sketch, NumInferenceSteps = 4, CallbackOnStepEnd = _ => { if (++steps == 2) cts.Cancel(); },
        }), new SynchronousProgress(reports.Add), cts.Token));
        Assert.Equal(2, steps);
        Assert.Contains(reports, p => p.Stage == "denoise" && p.Step == 2);

        // Under model offload the adapters come to the device before the UNet (diffusers' text_encoder->adapter->unet->vae).
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions { Offload = OffloadMode.Model },
            [], [Fixtures.Path("local-diffusers/t2i-adapter/full"), Fixtures.Path("local-diffusers/t2i-adapter/light_gray")]);
        var moves = new List<string>();
        components.ModelMoved += m => { if (m.ToExecutionDevice) moves.Add(m.Component); };
        using var offloaded = new StableDiffusionAdapterPipeline(components);
        using var result = offloaded.Generate(Sd15(new() { Images = [Sketch, Depth], NumInferenceSteps = 2, Generator = new Generator("cpu").ManualSeed(3) }));
        Assert.Equal(["adapter", "unet", "vae"], moves);
    }

    /// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SynchronousProgress(Action<PipelineProgress> report) : IProgress<PipelineProgress>
    {
        public void Report(PipelineProgress value) => report(value);
    }
}
