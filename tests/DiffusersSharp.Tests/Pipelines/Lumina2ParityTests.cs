using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Lumina2;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Lumina2Pipeline against diffusers' own runs on a tiny Lumina2 model (fixture local-diffusers/lumina2, made by
/// tools/reference/lumina2.py with diffusers 0.39.0 on torch 1.13 CPU; its README says how): CFG with normalisation and
/// two prompts of padded masks, CFG cut off half-way without normalisation, no CFG with custom sigmas and two images per
/// prompt, dynamic shifting (mu from the channel count, as diffusers computes it), and the whole pipeline in bfloat16.
/// Prompt embeddings come from the fixture (the Gemma side is Lumina2PromptParityTests'). Each case runs twice as the
/// script does: latents (every step's through the step callback, the timesteps, the final latents), then the decoded
/// image ([0, 1], as output_type "pt"). The bound, 1e-5 × max(1, max |expected|), is the other flow pipelines'.
/// </summary>
public sealed class Lumina2ParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private static string Folder => Fixtures.Path("local-diffusers/lumina2");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/lumina2/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    /// <summary>The fixture's components on the CPU (tiny-sd3's VAE), with the folder's scheduler or the dynamic one.</summary>
    internal static Lumina2Components Components(string scheduler = "scheduler", ScalarType dtype = ScalarType.Float32,
        Gemma2Model? textEncoder = null, GemmaTokenizer? tokenizer = null) => new()
    {
        Transformer = Lumina2Transformer2DModel.FromPretrained(Path.Combine(Folder, "transformer"), dtype),
        Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd3/model/vae"), dtype),
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Folder, scheduler, "scheduler_config.json")),
        Device = CPU, Dtype = dtype, TextEncoder = textEncoder, Tokenizer = tokenizer,
    };

    /// <summary>The request of case <paramref name="name"/>: its embeddings and masks from the fixture.</summary>
    internal Lumina2Request Embeds(string name) => new()
    {
        PromptEmbeds = E($"{name}/prompt_embeds"), PromptAttentionMask = E($"{name}/prompt_attention_mask"),
        NegativePromptEmbeds = _expected.GetValueOrDefault($"{name}/negative_prompt_embeds"),
        NegativePromptAttentionMask = _expected.GetValueOrDefault($"{name}/negative_prompt_attention_mask"),
    };

    private void Check(Lumina2Components components, Lumina2Request request, string name, long seed)
    {
        using var pipe = new Lumina2Pipeline(components);
        PipelineRunParity.Check(output, _expected, name, seed,
            (generator, type, onStep) => pipe.Generate(request with { Generator = generator, OutputType = type, CallbackOnStepEnd = onStep }),
            result => result.Tensor!, Tolerance);
    }

    [Fact]
    public void GuidedAndNormalizedMatchesDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("cfg") with { GuidanceScale = 4.0, NumInferenceSteps = 4, Height = 32, Width = 48 }, "cfg", 11);
    }

    [Fact]
    public void GuidanceCutOffHalfWayWithoutNormalizationMatchesDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("trunc") with
        {
            GuidanceScale = 5.0, CfgTruncRatio = 0.5, CfgNormalization = false, NumInferenceSteps = 4, Height = 48, Width = 32,
        }, "trunc", 12);
    }

    [Fact]
    public void UnguidedCustomSigmasImagesPerPromptMatchDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("nocfg") with
        {
            GuidanceScale = 1.0, Sigmas = [1.0f, 0.7f, 0.45f, 0.2f], NumImagesPerPrompt = 2, Height = 32, Width = 32,
        }, "nocfg", 13);
    }

    [Fact]
    public void DynamicShiftingUsesTheChannelCountAsDiffusers()
    {
        using var components = Components("scheduler-dynamic");
        Check(components, Embeds("dynamic") with { GuidanceScale = 3.0, NumInferenceSteps = 3, Height = 32, Width = 32 }, "dynamic", 14);
    }

    [Fact]
    public void FloatCheckOfTheBfloat16CaseMatchesDiffusers()
    {
        using var components = Components();
        Check(components, Embeds("bf16_ref") with { Latents = E("bf16_ref/initial_latents"), GuidanceScale = 4.0, NumInferenceSteps = 3, Height = 32, Width = 48 }, "bf16_ref", 15);
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
        using var pipe = new Lumina2Pipeline(components);
        var request = Embeds("bf16_ref") with
        {
            PromptEmbeds = E("bf16_ref/prompt_embeds").to(ScalarType.BFloat16),
            NegativePromptEmbeds = E("bf16_ref/negative_prompt_embeds").to(ScalarType.BFloat16),
            GuidanceScale = 4.0, NumInferenceSteps = 3, Height = 32, Width = 48,
        };
        PipelineRunParity.Bfloat16BesideDiffusers(output, _expected, 15,
            (generator, type) => pipe.Generate(request with { Generator = generator, OutputType = type }), result => result.Tensor!);
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
