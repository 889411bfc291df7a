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
using Generator = DiffusersSharp.Runtime.Generator;

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
        double Close(Tensor actual, string key) => TensorAssert.Close(actual, E(key), Tolerance, key);
        var timesteps = new List<float>();
        double worstStep = 0, latentError, imageError;
        using (var latents = pipe.Generate(request with
        {
            Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c =>
            {
                worstStep = Math.Max(worstStep, Close(c.Latents, $"{name}/step{c.Step}"));
                timesteps.Add(c.Timestep);
            },
        }))
            latentError = Close(latents.Tensor!, $"{name}/latents");
        Assert.Equal(E($"{name}/timesteps").data<float>().ToArray(), timesteps);
        using (var image = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Tensor }))
            imageError = Close(image.Tensor!, $"{name}/images");
        output.WriteLine($"{name}: {timesteps.Count} steps, worst step {worstStep:G3}, latents {latentError:G3}, images {imageError:G3} (max abs)");
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
    /// embeddings' dtype) must be torch's bfloat16 draw exactly, and the latents stay bfloat16. Our final latents and image
    /// against diffusers' float32 run from that same noise (bf16_ref), beside diffusers' own bfloat16 error; the bounds are
    /// about twice what was measured.
    /// </summary>
    [Fact]
    public void Bfloat16RunStaysAsCloseAsDiffusersOwn()
    {
        using (var noise = new Generator("cpu").ManualSeed(15).Randn([1, 16, 4, 6], ScalarType.BFloat16, CPU))
            Assert.True(noise.equal(E("bf16/noise")).all().item<bool>(), "the bfloat16 noise is not torch's bfloat16 draw");
        using var components = Components(dtype: ScalarType.BFloat16);
        using var pipe = new Lumina2Pipeline(components);
        var request = Embeds("bf16_ref") with
        {
            PromptEmbeds = E("bf16_ref/prompt_embeds").to(ScalarType.BFloat16),
            NegativePromptEmbeds = E("bf16_ref/negative_prompt_embeds").to(ScalarType.BFloat16),
            GuidanceScale = 4.0, NumInferenceSteps = 3, Height = 32, Width = 48,
        };
        using var latents = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(15), OutputType = OutputType.Latent });
        Assert.Equal(ScalarType.BFloat16, latents.Tensor!.dtype);
        double ours = TensorAssert.RelativeL2(latents.Tensor!.to(ScalarType.Float32), E("bf16_ref/latents"));
        double theirs = TensorAssert.RelativeL2(E("bf16/latents").to(ScalarType.Float32), E("bf16_ref/latents"));
        double toTheirs = TensorAssert.RelativeL2(latents.Tensor!.to(ScalarType.Float32), E("bf16/latents").to(ScalarType.Float32));
        using var image = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(15), OutputType = OutputType.Tensor });
        double imageOurs = TensorAssert.RelativeL2(image.Tensor!.to(ScalarType.Float32), E("bf16_ref/images"));
        double imageTheirs = TensorAssert.RelativeL2(E("bf16/images").to(ScalarType.Float32), E("bf16_ref/images"));
        output.WriteLine($"bfloat16 final latents relative L2 from diffusers' float32 (same noise): ours {ours:G3}, diffusers' own bfloat16 {theirs:G3}; " +
                         $"ours from diffusers' bfloat16 {toTheirs:G3}; images: ours {imageOurs:G3}, diffusers' {imageTheirs:G3}");
        Assert.True(ours < 2 * Math.Max(theirs, 0.005), $"bfloat16 latents are {ours:G3} (relative L2) from float32, diffusers' bfloat16 {theirs:G3}");
        Assert.True(imageOurs < 2 * Math.Max(imageTheirs, 0.005), $"bfloat16 image is {imageOurs:G3} (relative L2) from float32, diffusers' {imageTheirs:G3}");
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
