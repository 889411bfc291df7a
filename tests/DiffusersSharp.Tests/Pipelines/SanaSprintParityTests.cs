using DiffusersSharp.Schedulers;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Sana;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// SanaSprintPipeline against diffusers' own runs on a tiny SANA-Sprint transformer (fixture local-diffusers/sana-sprint,
/// tools/reference/sana_sprint.py, diffusers 0.39.0 on torch 1.13 CPU, float32; local-diffusers/sana's AutoencoderDC):
/// the default two steps with the intermediate angle, one step, four linspace steps with two images per prompt. Each
/// case runs twice as the script does: latents (every step's through the callback, and the final denoised / sigma_data),
/// then the image ([0, 1]). Bound: 1e-5 × max(1, max |expected|), the other flow pipelines'.
/// </summary>
public sealed class SanaSprintParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private static string Folder => Fixtures.Path("local-diffusers/sana-sprint");
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/sana-sprint/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    private static SanaComponents Components() => new()
    {
        Transformer = SanaTransformer2DModel.FromPretrained(Path.Combine(Folder, "transformer")),
        Vae = AutoencoderDC.FromPretrained(Fixtures.Path("local-diffusers/sana/vae")),
        SchedulerConfig = SchedulerConfigText.Parse(SchedulerConfigText.Read(Path.Combine(Folder, "scheduler"))),
        Device = CPU, Dtype = ScalarType.Float32,
    };

    private void Check(SanaSprintRequest request, string name, long seed)
    {
        using var components = Components();
        using var pipe = new SanaSprintPipeline(components);
        request = request with { Height = 64, Width = 96, UseResolutionBinning = false, PromptEmbeds = E($"{name}/prompt_embeds"), PromptAttentionMask = E($"{name}/prompt_attention_mask") };
        PipelineRunParity.Check(output, _expected, name, seed,
            (generator, type, onStep) => pipe.Generate(request with { Generator = generator, OutputType = type, CallbackOnStepEnd = onStep }),
            result => result.Tensor!, Tolerance);
    }

    [Fact]
    public void TwoStepsWithTheIntermediateAngleMatchDiffusers() => Check(new SanaSprintRequest { GuidanceScale = 4.5 }, "two", 21);

    [Fact]
    public void OneStepMatchesDiffusers() =>
        Check(new SanaSprintRequest { GuidanceScale = 3.0, NumInferenceSteps = 1, IntermediateTimesteps = null }, "one", 22);

    [Fact]
    public void FourLinspaceStepsWithImagesPerPromptMatchDiffusers() =>
        Check(new SanaSprintRequest
        {
            GuidanceScale = 6.0, NumInferenceSteps = 4, IntermediateTimesteps = null, MaxTimesteps = 1.4, NumImagesPerPrompt = 2,
        }, "four", 23);

    [Fact]
    public void WhatSprintDoesNotTakeIsRefusedBeforeAnyStep()
    {
        using var components = Components();
        using var pipe = new SanaSprintPipeline(components);
        var request = new SanaSprintRequest
        {
            PromptEmbeds = E("two/prompt_embeds"), PromptAttentionMask = E("two/prompt_attention_mask"), Height = 64, Width = 96, UseResolutionBinning = false,
        };
        Assert.Contains("no negative prompt", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { NegativePrompt = "x" })).Message);
        Assert.Contains("2 steps only", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { NumInferenceSteps = 3 })).Message);
        Assert.Contains("max_timesteps", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { MaxTimesteps = double.NaN })).Message);
        // SanaPipeline refuses these components (SCMScheduler), SanaSprintPipeline refuses Sana's.
        using var plain = new SanaPipeline(components);
        Assert.Contains("SanaSprintPipeline", Assert.Throws<ArgumentException>(() => plain.Generate(new SanaRequest
        {
            PromptEmbeds = E("two/prompt_embeds"), PromptAttentionMask = E("two/prompt_attention_mask"), GuidanceScale = 1, Height = 64, Width = 96, UseResolutionBinning = false,
        })).Message);
        using var sana = SanaParityTests.Components();
        using var sprintOnSana = new SanaSprintPipeline(sana);
        Assert.Contains("SCMScheduler", Assert.Throws<ArgumentException>(() => sprintOnSana.Generate(request)).Message);
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
