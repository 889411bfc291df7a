using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Flux2KleinPipeline against diffusers' own runs on a tiny FLUX.2 [klein] model (fixture local-diffusers/flux2-klein,
/// made by tools/reference/flux2_klein.py with diffusers 0.39.0 on torch 1.13 CPU, float32; its README says how): text to
/// image on a distilled model (guidance ignored) and on a base model with CFG, custom sigmas, one and two reference images.
/// Prompt embeddings come from the fixture, so the text encoder is not part of this check (Flux2KleinPromptEncoderTests
/// checks it). Each case runs twice as the script does: latents (every step's through the step callback, and the final
/// de-normalised ones), then the decoded image. The bound, 1e-5 × max(1, max |expected|), is the other flow pipelines'.
/// </summary>
public sealed class Flux2KleinParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux2-klein/expected.safetensors");
    private readonly Flux2KleinComponents _base = LocalDiffusersFlux2Klein.Components(distilled: false);
    private readonly Flux2KleinComponents _distilled = LocalDiffusersFlux2Klein.Components(distilled: true);

    private Tensor E(string key) => _expected[key];

    private void Check(Flux2KleinComponents components, Flux2KleinRequest request, string name, long seed)
    {
        using var pipe = new Flux2KleinPipeline(components);
        LocalDiffusersFlux2Klein.CheckCase(output, _expected, Tolerance, r => pipe.Generate(r), request, name, seed);
    }

    [Fact]
    public void DistilledTextToImageIgnoresGuidanceAndMatchesDiffusers() =>
        Check(_distilled, new Flux2KleinRequest
        {
            PromptEmbeds = E("in.prompt_embeds")[..1], Height = 64, Width = 80, NumInferenceSteps = 3, GuidanceScale = 4.0,
        }, "t2i", 42);

    [Fact]
    public void BaseModelWithCfgMatchesDiffusers() =>
        Check(_base, new Flux2KleinRequest
        {
            PromptEmbeds = E("in.prompt_embeds"), NegativePromptEmbeds = E("in.negative_prompt_embeds"), Height = 48, Width = 64,
            NumInferenceSteps = 2, GuidanceScale = 3.5, NumImagesPerPrompt = 2,
        }, "t2i_cfg", 7);

    [Fact]
    public void CustomSigmasMatchDiffusers() =>
        // mu comes from num_inference_steps (default 50) even with four sigmas, as in diffusers.
        Check(_distilled, new Flux2KleinRequest
        {
            PromptEmbeds = E("in.prompt_embeds")[1..], Height = 32, Width = 64, Sigmas = [1.0f, 0.7f, 0.45f, 0.2f],
        }, "t2i_sigmas", 8);

    [Fact]
    public void AReferenceImageSetsTheSizeAndMatchesDiffusers() =>
        // 90 x 70: floored to 88 x 64 and centre-cropped; no height / width given, so the output is 88 x 64.
        Check(_base, new Flux2KleinRequest
        {
            Images = [LocalDiffusersFlux2Klein.Pixels(E("in.odd"))], PromptEmbeds = E("in.prompt_embeds")[..1], NegativePromptEmbeds = E("in.negative_prompt_embeds")[..1],
            NumInferenceSteps = 3, GuidanceScale = 4.0,
        }, "ref", 123);

    [Fact]
    public void TwoReferenceImagesMatchDiffusers() =>
        Check(_distilled, new Flux2KleinRequest
        {
            Images = [ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), LocalDiffusersFlux2Klein.Pixels(E("in.wide"))], PromptEmbeds = E("in.prompt_embeds")[1..],
            Height = 48, Width = 48, NumInferenceSteps = 2, NumImagesPerPrompt = 2,
        }, "ref_two", 99);

    [Fact]
    public void Bfloat16RunsStayCloseToDiffusersFloat32()
    {
        // The whole pipeline in bfloat16 (transformer, VAE and its batch-norm statistics; float32 prompt embeddings and
        // reference image cast as they enter): a sanity bound on the distance from diffusers' float32 result, about twice
        // what was measured (0.0074 relative L2 for the "ref" case's final latents).
        using var components = new Flux2KleinComponents
        {
            Transformer = Flux2Transformer2DModel.FromPretrained(Path.Combine(LocalDiffusersFlux2Klein.Folder, "transformer"), ScalarType.BFloat16),
            Vae = AutoencoderKLFlux2.FromPretrained(Path.Combine(LocalDiffusersFlux2Klein.Folder, "vae"), ScalarType.BFloat16),
            SchedulerConfig = _base.SchedulerConfig, IsDistilled = false, Device = CPU, Dtype = ScalarType.BFloat16,
        };
        using var pipe = new Flux2KleinPipeline(components);
        using var result = pipe.Generate(new Flux2KleinRequest
        {
            Images = [LocalDiffusersFlux2Klein.Pixels(E("in.odd"))], PromptEmbeds = E("in.prompt_embeds")[..1], NegativePromptEmbeds = E("in.negative_prompt_embeds")[..1],
            NumInferenceSteps = 3, GuidanceScale = 4.0, OutputType = OutputType.Latent, Generator = new Generator("cpu").ManualSeed(123),
        });
        Assert.Equal(ScalarType.BFloat16, result.Tensor!.dtype);
        double relative = TensorAssert.RelativeL2(result.Tensor!.to(ScalarType.Float32), E("ref.latents"));
        output.WriteLine($"ref in bfloat16: final latents relative L2 {relative:G3} from diffusers' float32");
        Assert.True(relative < 0.015, $"bfloat16 latents are {relative:G3} (relative L2) from float32");
    }

    [Theory]
    [InlineData("in.odd", 64 * 64, "area.odd_4096")]
    [InlineData("in.wide", 3000, "area.wide_3000")]
    public void ResizingToATargetAreaMatchesDiffusers(string input, int area, string key)
    {
        var resized = Flux2ImageProcessor.ResizeToTargetArea(LocalDiffusersFlux2Klein.Pixels(E(input)), area);
        var expected = E(key);
        Assert.Equal((expected.shape[1], expected.shape[0]), (resized.Width, resized.Height));
        Assert.Equal(expected.to(ScalarType.Byte).contiguous().data<byte>().ToArray(), resized.Pixels);
    }

    public void Dispose()
    {
        _base.Dispose();
        _distilled.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
