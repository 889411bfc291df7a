using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.CogView4;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// CogView4Pipeline against diffusers' own runs on a tiny CogView4 model (fixture local-diffusers/cogview4, made by
/// tools/reference/cogview4.py with diffusers 0.39.0 on torch 1.13 CPU; its README says how): CFG with negatives of
/// another length, no CFG with custom sigmas, two images per prompt and size conditions of their own, custom timesteps,
/// and the whole pipeline in bfloat16. Prompt embeddings come from the fixture. Each case runs twice as the script
/// does: latents (every step's through the step callback, the timesteps, the final latents), then the decoded image
/// ([0, 1], as output_type "pt"). The bound, 1e-5 × max(1, max |expected|), is the other flow pipelines'.
/// </summary>
public sealed class CogView4ParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private static string Folder => Fixtures.Path("local-diffusers/cogview4");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/cogview4/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    /// <summary>The fixture's components on the CPU (tiny-sd3's VAE).</summary>
    internal static CogView4Components Components(ScalarType dtype = ScalarType.Float32) => new()
    {
        Transformer = CogView4Transformer2DModel.FromPretrained(Path.Combine(Folder, "transformer"), dtype),
        Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd3/model/vae"), dtype),
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Folder, "scheduler", "scheduler_config.json")),
        Device = CPU, Dtype = dtype,
    };

    /// <summary>The request of case <paramref name="name"/>: its embeddings from the fixture.</summary>
    private CogView4Request Embeds(string name) => new()
    {
        PromptEmbeds = E($"{name}/prompt_embeds"),
        NegativePromptEmbeds = _expected.GetValueOrDefault($"{name}/negative_prompt_embeds"),
    };

    private void Check(CogView4Components components, CogView4Request request, string name, long seed)
    {
        using var pipe = new CogView4Pipeline(components);
        PipelineRunParity.Check(output, _expected, name, seed,
            (generator, type, onStep) => pipe.Generate(request with { Generator = generator, OutputType = type, CallbackOnStepEnd = onStep }),
            result => result.Tensor!, Tolerance);
    }

    [Fact]
    public void GuidedWithLongerNegativesMatchesDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("cfg") with { GuidanceScale = 5.0, NumInferenceSteps = 4, Height = 32, Width = 48 }, "cfg", 11);
    }

    [Fact]
    public void UnguidedCustomSigmasTwoImagesAndSizeConditionsMatchDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("nocfg") with
        {
            GuidanceScale = 1.0, Sigmas = [1.0f, 0.7f, 0.45f, 0.2f], NumImagesPerPrompt = 2, NumInferenceSteps = 4, Height = 32, Width = 32,
            OriginalSize = (64, 96), CropsCoordsTopLeft = (8, 16),
        }, "nocfg", 12);
    }

    [Fact]
    public void CustomTimestepsMatchDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("timesteps") with { GuidanceScale = 3.0, Timesteps = [900, 650, 400, 150], Height = 64, Width = 32 }, "timesteps", 13);
    }

    [Fact]
    public void TheSchedulerGetsDiffusersSigmas()
    {
        // The shifted sigmas (with the terminal 0) of every case, from the pipeline's timesteps, sigmas and mu.
        using var components = Components();
        using var pipe = new CogView4Pipeline(components);
        foreach (var (name, imageSeqLen, request) in new (string, int, CogView4Request)[]
                 {
                     ("cfg", 2 * 3, new CogView4Request { NumInferenceSteps = 4 }),
                     ("nocfg", 2 * 2, new CogView4Request { NumInferenceSteps = 4, Sigmas = [1.0f, 0.7f, 0.45f, 0.2f] }),
                     ("timesteps", 4 * 2, new CogView4Request { Timesteps = [900, 650, 400, 150] }),
                 })
        {
            using var scheduler = new FlowMatchEulerDiscreteScheduler(components.SchedulerConfig);
            float[] timesteps = request.Timesteps is { } t ? Array.ConvertAll(t, v => (float)v) : E($"{name}/timesteps").data<float>().ToArray();
            float[] sigmas = request.Sigmas ?? Array.ConvertAll(timesteps, v => v / 1000f);
            scheduler.SetTimesteps(timesteps.Length, sigmas: sigmas, mu: pipe.CalculateShift(imageSeqLen), timesteps: timesteps);
            Assert.Equal(E($"{name}/sigmas").data<float>().ToArray(), scheduler.Sigmas.data<float>().ToArray());
            Assert.Equal(E($"{name}/timesteps").data<float>().ToArray(), scheduler.Timesteps.data<float>().ToArray());
        }
    }

    [Fact]
    public void FloatCheckOfTheBfloat16CaseMatchesDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("bf16_ref") with { GuidanceScale = 4.0, NumInferenceSteps = 3, Height = 32, Width = 48 }, "bf16_ref", 15);
    }

    /// <summary>
    /// The whole pipeline in bfloat16, as diffusers' bfloat16 run of the fixture: the noise is drawn in float32 whatever the
    /// model's dtype (torch's float32 draw), the latents end in bfloat16 (the scheduler returns the model output's dtype),
    /// and ours are no further than twice diffusers' own bfloat16 error from diffusers' float32 run (bf16_ref).
    /// </summary>
    [Fact]
    public void Bfloat16RunStaysAsCloseAsDiffusersOwn()
    {
        using var components = Components(dtype: ScalarType.BFloat16);
        using var pipe = new CogView4Pipeline(components);
        var request = Embeds("bf16_ref") with
        {
            PromptEmbeds = E("bf16_ref/prompt_embeds").to(ScalarType.BFloat16),
            NegativePromptEmbeds = E("bf16_ref/negative_prompt_embeds").to(ScalarType.BFloat16),
            GuidanceScale = 4.0, NumInferenceSteps = 3, Height = 32, Width = 48,
        };
        PipelineRunParity.Bfloat16BesideDiffusers(output, _expected, 15,
            (generator, type) => pipe.Generate(request with { Generator = generator, OutputType = type }), result => result.Tensor!,
            noiseDtype: ScalarType.Float32);
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
