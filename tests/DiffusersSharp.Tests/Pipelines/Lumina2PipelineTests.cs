using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Lumina2;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>Lumina2Pipeline beyond the parity runs: bad requests refused before any step, given negatives repeated per
/// image (diffusers fails there), cancellation, a folder without text encoder.</summary>
public sealed class Lumina2PipelineTests(ITestOutputHelper output) : IDisposable
{
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/lumina2/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    private Lumina2Request Cfg => new()
    {
        PromptEmbeds = E("cfg/prompt_embeds"), PromptAttentionMask = E("cfg/prompt_attention_mask"),
        NegativePromptEmbeds = E("cfg/negative_prompt_embeds"), NegativePromptAttentionMask = E("cfg/negative_prompt_attention_mask"),
        GuidanceScale = 4.0, NumInferenceSteps = 4, Height = 32, Width = 48,
    };

    public static TheoryData<string> BadRequests => new()
    {
        "size", "max length", "no sigmas", "trunc nan", "both prompts", "no prompt", "no mask", "negative shape", "latents", "generators",
        "steps", "no encoder", "negative count",
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public void BadRequestsAreRefusedBeforeAnyStep(string what)
    {
        using var components = Lumina2ParityTests.Components();
        using var pipe = new Lumina2Pipeline(components);
        var request = what switch
        {
            "size" => Cfg with { Height = 40 },
            "max length" => Cfg with { MaxSequenceLength = 513 },
            "no sigmas" => Cfg with { Sigmas = [] },
            "trunc nan" => Cfg with { CfgTruncRatio = double.NaN },
            "both prompts" => Cfg with { Prompt = "a" },
            "no prompt" => new Lumina2Request { Height = 32, Width = 32 },
            "no mask" => Cfg with { PromptAttentionMask = null },
            "negative shape" => Cfg with { NegativePromptEmbeds = zeros(2, 9, 32), NegativePromptAttentionMask = ones(2, 9, dtype: ScalarType.Int64) },
            "latents" => Cfg with { Latents = zeros(2, 16, 4, 4) },
            "generators" => Cfg with { Generators = [new Generator("cpu")] },
            "steps" => Cfg with { NumInferenceSteps = 0 },
            "negative count" => Cfg with { NegativePromptEmbeds = null, NegativePromptAttentionMask = null, NegativePrompt = new[] { "a", "b", "c" } },
            _ => Cfg with { PromptEmbeds = null, PromptAttentionMask = null, Prompt = "a fox" },
        };
        int steps = 0;
        var error = Record.Exception(() => pipe.Generate(request with { CallbackOnStepEnd = _ => steps++ }));
        Assert.True(error is ArgumentException, $"{what}: {error}");
        output.WriteLine($"{what}: {error!.Message}");
        Assert.Equal(0, steps);
    }

    /// <summary>
    /// Given negative embeddings with two images per prompt: repeated per image like the prompt's (diffusers leaves them
    /// unrepeated and fails on the batch). The run equals one with both sides already repeated and one image per prompt.
    /// </summary>
    [Fact]
    public void GivenNegativesAreRepeatedPerImage()
    {
        using var components = Lumina2ParityTests.Components();
        using var pipe = new Lumina2Pipeline(components);
        var one = new Lumina2Request
        {
            PromptEmbeds = E("trunc/prompt_embeds")[..1], PromptAttentionMask = E("trunc/prompt_attention_mask")[..1],
            NegativePromptEmbeds = E("trunc/negative_prompt_embeds")[..1], NegativePromptAttentionMask = E("trunc/negative_prompt_attention_mask")[..1],
            GuidanceScale = 5.0, NumInferenceSteps = 2, Height = 32, Width = 32, OutputType = OutputType.Latent,
        };
        using var repeated = pipe.Generate(one with { NumImagesPerPrompt = 2, Generator = new Generator("cpu").ManualSeed(3) });
        var twice = one with
        {
            PromptEmbeds = one.PromptEmbeds!.repeat(2, 1, 1), PromptAttentionMask = one.PromptAttentionMask!.repeat(2, 1),
            NegativePromptEmbeds = one.NegativePromptEmbeds!.repeat(2, 1, 1), NegativePromptAttentionMask = one.NegativePromptAttentionMask!.repeat(2, 1),
            Generator = new Generator("cpu").ManualSeed(3),
        };
        using var expected = pipe.Generate(twice);
        Assert.True(repeated.Tensor!.equal(expected.Tensor!).all().item<bool>());
    }

    [Fact]
    public void CancellationStopsBetweenSteps()
    {
        using var components = Lumina2ParityTests.Components();
        using var pipe = new Lumina2Pipeline(components);
        using var cts = new CancellationTokenSource();
        int steps = 0;
        Assert.Throws<OperationCanceledException>(() => pipe.Generate(Cfg with
        {
            CallbackOnStepEnd = _ => { if (++steps == 2) cts.Cancel(); },
        }, cancellationToken: cts.Token));
        Assert.Equal(2, steps);
    }

    [Fact]
    public void AFolderWithoutTextEncoderLoadsForEmbeddings()
    {
        // The fixture's model_index.json has no text encoder / tokenizer, nor a VAE folder: a copy with tiny-sd3's VAE.
        string dir = Directory.CreateTempSubdirectory("ds-lumina2-").FullName;
        try
        {
            foreach (var sub in new[] { "transformer", "scheduler" })
            {
                Directory.CreateDirectory(Path.Combine(dir, sub));
                foreach (var f in Directory.GetFiles(Fixtures.Path($"local-diffusers/lumina2/{sub}"))) File.Copy(f, Path.Combine(dir, sub, Path.GetFileName(f)));
            }
            Directory.CreateDirectory(Path.Combine(dir, "vae"));
            foreach (var f in Directory.GetFiles(Fixtures.Path("tiny-sd3/model/vae"))) File.Copy(f, Path.Combine(dir, "vae", Path.GetFileName(f)));
            File.Copy(Fixtures.Path("local-diffusers/lumina2/model_index.json"), Path.Combine(dir, "model_index.json"));
            using var pipe = Lumina2Pipeline.FromPretrained(dir, new PipelineLoadOptions { LoadTextEncoders = false });
            Assert.Null(pipe.Components.TextEncoder);
            using var result = pipe.Generate(Cfg with { NumInferenceSteps = 1, OutputType = OutputType.Latent, Generator = new Generator("cpu").ManualSeed(7) });
            Assert.Equal(new long[] { 2, 16, 4, 6 }, result.Tensor!.shape);
            var refusal = Assert.Throws<ArgumentException>(() => pipe.Generate(new Lumina2Request { Prompt = "a", Height = 32, Width = 32 }));
            Assert.Contains("no Gemma text encoder", refusal.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
