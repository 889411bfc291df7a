using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.AuraFlow;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// AuraFlowPipeline against diffusers' own runs on a tiny AuraFlow model (fixture local-diffusers/auraflow, made by
/// tools/reference/auraflow.py with diffusers 0.39.0 on torch 1.13 CPU; its README says how): CFG with two prompts,
/// given negatives repeated for two images per prompt, no CFG with custom sigmas, and the whole pipeline in bfloat16.
/// Prompt embeddings come from the fixture (the UMT5 side is AuraFlowPromptParityTests'). Each case runs twice as the
/// script does: latents (every step's through the step callback, the timesteps, the final latents), then the decoded
/// image ([0, 1], as output_type "pt"). The bound, 1e-5 × max(1, max |expected|), is the other flow pipelines'.
/// </summary>
public sealed class AuraFlowParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private static string Folder => Fixtures.Path("local-diffusers/auraflow");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/auraflow/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    /// <summary>The fixture's components on the CPU (tiny-sdxl's VAE), optionally with a text encoder and tokenizer.</summary>
    internal static AuraFlowComponents Components(ScalarType dtype = ScalarType.Float32, UMT5EncoderModel? textEncoder = null,
        ITextTokenizer? tokenizer = null) => new()
    {
        Transformer = AuraFlowTransformer2DModel.FromPretrained(Path.Combine(Folder, "transformer"), dtype),
        Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sdxl/model/vae"), dtype),
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Folder, "scheduler", "scheduler_config.json")),
        Device = CPU, Dtype = dtype, TextEncoder = textEncoder, Tokenizer = tokenizer,
    };

    /// <summary>The request of case <paramref name="name"/>: its embeddings from the fixture.</summary>
    internal AuraFlowRequest Embeds(string name) => new()
    {
        PromptEmbeds = E($"{name}/prompt_embeds"),
        NegativePromptEmbeds = _expected.GetValueOrDefault($"{name}/negative_prompt_embeds"),
    };

    private void Check(AuraFlowComponents components, AuraFlowRequest request, string name, long seed)
    {
        using var pipe = new AuraFlowPipeline(components);
        PipelineRunParity.Check(output, _expected, name, seed,
            (generator, type, onStep) => pipe.Generate(request with { Generator = generator, OutputType = type, CallbackOnStepEnd = onStep }),
            result => result.Tensor!, Tolerance);
    }

    [Fact]
    public void GuidedTwoPromptsMatchDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("cfg") with { GuidanceScale = 3.5, NumInferenceSteps = 4, Height = 32, Width = 48 }, "cfg", 21);
    }

    [Fact]
    public void GivenNegativesRepeatedPerImageMatchDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("images_per_prompt") with
        {
            GuidanceScale = 5.0, NumImagesPerPrompt = 2, NumInferenceSteps = 3, Height = 48, Width = 32,
        }, "images_per_prompt", 22);
    }

    [Fact]
    public void UnguidedCustomSigmasMatchDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("nocfg") with { GuidanceScale = 1.0, Sigmas = [1.0f, 0.6f, 0.3f], Height = 32, Width = 32 }, "nocfg", 23);
    }

    [Fact]
    public void FloatCheckOfTheBfloat16CaseMatchesDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("bf16_ref") with { Latents = E("bf16_ref/initial_latents"), GuidanceScale = 3.5, NumInferenceSteps = 3, Height = 32, Width = 48 }, "bf16_ref", 24);
    }

    /// <summary>
    /// The whole pipeline in bfloat16, as diffusers' bfloat16 run of the fixture: the noise drawn in bfloat16 (the
    /// embeddings' dtype) is torch's bfloat16 draw, the latents stay bfloat16, and ours are no further than twice
    /// diffusers' own bfloat16 error from diffusers' float32 run from that same noise (bf16_ref).
    /// </summary>
    [Fact]
    public void Bfloat16RunStaysAsCloseAsDiffusersOwn()
    {
        using var components = Components(dtype: ScalarType.BFloat16);
        using var pipe = new AuraFlowPipeline(components);
        var request = Embeds("bf16_ref") with
        {
            PromptEmbeds = E("bf16_ref/prompt_embeds").to(ScalarType.BFloat16),
            NegativePromptEmbeds = E("bf16_ref/negative_prompt_embeds").to(ScalarType.BFloat16),
            GuidanceScale = 3.5, NumInferenceSteps = 3, Height = 32, Width = 48,
        };
        PipelineRunParity.Bfloat16BesideDiffusers(output, _expected, 24,
            (generator, type) => pipe.Generate(request with { Generator = generator, OutputType = type }), result => result.Tensor!);
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
