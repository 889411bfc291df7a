using DiffusersSharp.Images;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Sana;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// SanaSprintImg2ImgPipeline against diffusers' own runs (fixture local-diffusers/sana-sprint-img2img,
/// tools/reference/sana_sprint_img2img.py, diffusers 0.39.0 on torch 1.13 CPU, float32; the sana-sprint transformer and
/// scheduler, local-diffusers/sana's AutoencoderDC; tiny-sd3's 64 x 64 init image resized to 96 x 64): diffusers' defaults
/// (2 steps with the intermediate angle, strength 0.6), 4 linspace steps at strength 0.5 with two prompts (the schedule
/// entered at the third angle), strength 0.9 with two images per prompt. Each case runs twice as the script does:
/// latents (every step's through the callback, the final denoised / sigma_data), then the image ([0, 1]). Bound:
/// 1e-5 × max(1, max |expected|), the other flow pipelines'.
/// </summary>
public sealed class SanaSprintImg2ImgParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private static string Folder => Fixtures.Path("local-diffusers/sana-sprint");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/sana-sprint-img2img/expected.safetensors");
    private static readonly ImageBuffer Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));

    private Tensor E(string key) => _expected[key];

    private static SanaComponents Components() => new()
    {
        Transformer = SanaTransformer2DModel.FromPretrained(Path.Combine(Folder, "transformer")),
        Vae = AutoencoderDC.FromPretrained(Fixtures.Path("local-diffusers/sana/vae")),
        SchedulerConfig = SchedulerConfigText.Parse(SchedulerConfigText.Read(Path.Combine(Folder, "scheduler"))),
        Device = CPU, Dtype = ScalarType.Float32,
    };

    private void Check(SanaSprintImg2ImgRequest request, string name, long seed)
    {
        using var components = Components();
        using var pipe = new SanaSprintImg2ImgPipeline(components);
        request = request with
        {
            Image = Image, Height = 64, Width = 96, UseResolutionBinning = false,
            PromptEmbeds = E($"{name}/prompt_embeds"), PromptAttentionMask = E($"{name}/prompt_attention_mask"),
        };
        PipelineRunParity.Check(output, _expected, name, seed,
            (generator, type, onStep) => pipe.Generate(request with { Generator = generator, OutputType = type, CallbackOnStepEnd = onStep }),
            result => result.Tensor!, Tolerance);
    }

    [Fact]
    public void DiffusersDefaultsMatchDiffusers() => Check(new SanaSprintImg2ImgRequest { GuidanceScale = 4.5 }, "default", 31);

    [Fact]
    public void HalfStrengthEntersTheScheduleLateAndMatchesDiffusers()
    {
        Assert.Equal(2, SanaSprintImg2ImgPipeline.StartIndex(4, 0.5));
        Check(new SanaSprintImg2ImgRequest { GuidanceScale = 3.0, NumInferenceSteps = 4, IntermediateTimesteps = null, Strength = 0.5 }, "half", 32);
    }

    [Fact]
    public void ImagesPerPromptFromOneImageMatchDiffusers() =>
        Check(new SanaSprintImg2ImgRequest { GuidanceScale = 5.0, Strength = 0.9, NumImagesPerPrompt = 2 }, "images", 33);

    [Fact]
    public void TheEncodedImageMatchesDiffusers()
    {
        // prepare_latents' image_latents: the preprocessed image (lanczos to 96 x 64) encoded, times scaling_factor and sigma_data.
        using var components = Components();
        using var pipe = new SanaSprintImg2ImgPipeline(components);
        using var _ = inference_mode();
        using var pre = pipe.ImageProcessor.Preprocess(Image, 64, 96);
        using var encoded = components.Vae.Encode(pre) * components.Vae.Config.ScalingFactor * 0.5;
        double error = TensorAssert.Close(encoded, E("default/image_latents"), Tolerance, "image_latents");
        output.WriteLine($"image latents: max abs {error:G3}");
    }

    [Theory]
    [InlineData("no image")]
    [InlineData("strength")]
    [InlineData("no step")]
    [InlineData("negative")]
    public void BadRequestsAreRefusedBeforeAnyStep(string what)
    {
        using var components = Components();
        using var pipe = new SanaSprintImg2ImgPipeline(components);
        var request = new SanaSprintImg2ImgRequest
        {
            Image = Image, Height = 64, Width = 96, UseResolutionBinning = false,
            PromptEmbeds = E("default/prompt_embeds"), PromptAttentionMask = E("default/prompt_attention_mask"),
        };
        request = what switch
        {
            "no image" => request with { Image = null },
            "strength" => request with { Strength = 1.5 },
            "no step" => request with { Strength = 0.0 },
            _ => request with { NegativePrompt = "blurry" },
        };
        int steps = 0;
        var error = Record.Exception(() => pipe.Generate(request with { CallbackOnStepEnd = _ => steps++ }));
        Assert.True(error is ArgumentException, $"{what}: {error}");
        output.WriteLine($"{what}: {error!.Message}");
        Assert.Equal(0, steps);
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
