using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>The tiny SD 1.5 and SDXL pipelines loaded once for the parity tests.</summary>
public sealed class TinyUNetPipelines : IDisposable
{
    /// <summary>tiny-sd15's components.</summary>
    public StableDiffusionComponents Sd15 { get; } = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());

    /// <summary>tiny-sdxl's components.</summary>
    public StableDiffusionComponents Sdxl { get; } = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());

    /// <summary>tiny-sd15's own scheduler config as loaded (tests swap <see cref="Sd15"/>'s).</summary>
    public JsonObject Sd15Scheduler { get; } = SchedulerConfigText.Parse(SchedulerConfigText.Read(Fixtures.Path("tiny-sd15/model/scheduler")));

    /// <inheritdoc />
    public void Dispose()
    {
        Sd15.Dispose();
        Sdxl.Dispose();
    }
}

/// <summary>
/// The SD 1.5 and SDXL pipelines against diffusers' own runs on the tiny models (fixtures tiny-sd15 and tiny-sdxl: final
/// latents and the decoded image of each case in meta.json, every case with its own scheduler). Float32 on the CPU. The
/// fixtures README asks for latents within 1e-3 and images within 2/255. Measured here: latents 2.7e-6 .. 1.04e-4 (euler_a)
/// on latents up to 66 in magnitude, relative to max(1, max |latents|) 1.6e-6 .. 3.2e-5 (ddim, whose latents stay near 1);
/// images 8e-7 .. 2.4e-5 (ddim). The bounds sit above the worst of each: 5e-5 x max(1, max |expected|) for latents and
/// 5e-5 for images in [0, 1].
/// </summary>
public sealed class StableDiffusionParityTests(TinyUNetPipelines models, ITestOutputHelper output) : IClassFixture<TinyUNetPipelines>
{
    private const double Tolerance = 5e-5;

    // meta.json holds a bare -Infinity (lambda_min_clipped), as Python's json writes it: read it as diffusers configs are read.
    private static JsonObject Case(string fixture, string name) =>
        SchedulerConfigText.Parse(File.ReadAllText(Fixtures.Path($"{fixture}/meta.json")))["cases"]![name]!.AsObject();

    /// <summary>The request diffusers was called with, as meta.json records it; the mode comes from the pipeline class.</summary>
    private static StableDiffusionRequest Request(string fixture, JsonObject c, Generator generator, OutputType outputType)
    {
        string pipeline = c["pipeline"]!.GetValue<string>();
        T Fill<T>(T r) where T : StableDiffusionRequest => r with
        {
            Prompt = c["prompt"]!.GetValue<string>(),
            NegativePrompt = c["negative_prompt"]?.GetValue<string>() is { } n ? (PromptList?)n : null,
            NumInferenceSteps = c["num_inference_steps"]!.GetValue<int>(),
            GuidanceScale = c["guidance_scale"]!.GetValue<double>(),
            Height = c["height"]?.GetValue<int>(),
            Width = c["width"]?.GetValue<int>(),
            Generator = generator,
            OutputType = outputType,
        };
        if (!pipeline.Contains("Img2Img") && !pipeline.Contains("Inpaint")) return Fill(new StableDiffusionRequest());
        var image = ImageFile.LoadRgb(Fixtures.Path($"{fixture}/{c["image"]!.GetValue<string>()}"));
        double strength = c["strength"]!.GetValue<double>();
        if (pipeline.Contains("Img2Img")) return Fill(new StableDiffusionImg2ImgRequest { Image = image, Strength = strength });
        var mask = ImageFile.Load(Fixtures.Path($"{fixture}/{c["mask_image"]!.GetValue<string>()}"));
        return Fill(new StableDiffusionInpaintRequest { Image = image, Strength = strength, MaskImage = mask });
    }

    private StableDiffusionPipelineOutput Generate(StableDiffusionComponents components, StableDiffusionRequest request, JsonObject scheduler) =>
        (components.IsXL, request) switch
        {
            (false, StableDiffusionInpaintRequest r) => Use(new StableDiffusionInpaintPipeline(components), scheduler, p => p.Generate(r)),
            (false, StableDiffusionImg2ImgRequest r) => Use(new StableDiffusionImg2ImgPipeline(components), scheduler, p => p.Generate(r)),
            (false, var r) => Use(new StableDiffusionPipeline(components), scheduler, p => p.Generate(r)),
            (true, StableDiffusionInpaintRequest r) => Use(new StableDiffusionXLInpaintPipeline(components), scheduler, p => p.Generate(r)),
            (true, StableDiffusionImg2ImgRequest r) => Use(new StableDiffusionXLImg2ImgPipeline(components), scheduler, p => p.Generate(r)),
            (true, var r) => Use(new StableDiffusionXLPipeline(components), scheduler, p => p.Generate(r)),
        };

    // The scheduler is set on the built pipeline, as `pipe.scheduler = ...`: the recorded configs show that the fixture's
    // schedulers did not go through the SD constructors' outdated-config fix-ups (t2i_ddim ran with DDIM's default
    // clip_sample True, which StableDiffusionPipeline's constructor would have turned off).
    private static StableDiffusionPipelineOutput Use<T>(T pipeline, JsonObject scheduler, Func<T, StableDiffusionPipelineOutput> run)
        where T : StableDiffusionPipelineBase
    {
        using (pipeline)
        {
            pipeline.Components.UseScheduler(scheduler);
            return run(pipeline);
        }
    }

    [Theory]
    [InlineData("tiny-sd15", "t2i_pndm")]
    [InlineData("tiny-sd15", "t2i_euler")]
    [InlineData("tiny-sd15", "t2i_euler_a")]
    [InlineData("tiny-sd15", "t2i_dpmpp_2m_karras")]
    [InlineData("tiny-sd15", "t2i_ddim")]
    [InlineData("tiny-sd15", "t2i_lms")]
    [InlineData("tiny-sd15", "i2i")]
    [InlineData("tiny-sd15", "inpaint")]
    [InlineData("tiny-sdxl", "t2i")]
    [InlineData("tiny-sdxl", "t2i_noneg")]
    [InlineData("tiny-sdxl", "i2i")]
    [InlineData("tiny-sdxl", "inpaint")]
    public void PipelineMatchesDiffusers(string fixture, string name)
    {
        var c = Case(fixture, name);
        var components = fixture == "tiny-sdxl" ? models.Sdxl : models.Sd15;
        // The scheduler each case ran with, from its recorded config (diffusers' Scheduler.from_config result).
        var scheduler = c["scheduler_config"]!.AsObject();
        var expected = Fixtures.Expected($"{fixture}/expected.safetensors");
        long seed = c["seed"]!.GetValue<long>();

        using var g1 = new Generator("cpu").ManualSeed(seed);
        using var latents = Generate(components, Request(fixture, c, g1, OutputType.Latent), scheduler);
        double latentError = TensorAssert.Close(latents.Tensor!, expected[$"{name}.latents"], Tolerance, $"{name} latents");
        using var g2 = new Generator("cpu").ManualSeed(seed);
        using var image = Generate(components, Request(fixture, c, g2, OutputType.Numpy), scheduler);
        double imageError = TensorAssert.Close(image.Tensor!, expected[$"{name}.image"], Tolerance, $"{name} image");
        output.WriteLine($"{fixture} {name}: latents max |diff| {latentError:G3} (max |latents| {expected[$"{name}.latents"].abs().max().item<float>():G3}), image max |diff| {imageError:G3}");
    }
}
