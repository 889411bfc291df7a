using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Sana;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// <see cref="SanaPipeline.EncodePrompt"/> against diffusers v0.39.0's own <c>SanaPipeline.encode_prompt</c> from prompt
/// strings (fixture local-diffusers/sana-prompt, made by tools/reference/sana_prompt.py; its README says how): Hugging
/// Face's tokenizers library's ids of the gemma-tokenizer fixture's tokenizer.json and transformers' own Gemma2Model
/// (the fixture's tiny text_encoder/) on diffusers' side; our GemmaTokenizer and Gemma2Model here. Each case of
/// cases.json (the default instruction, lower-casing / stripping and truncation, negative prompts, two images per
/// prompt, a short and an empty instruction, max_sequence_length 24 / 40 / 300, two prompts with two images each) is one
/// request; embeddings within 1e-5 × max(1, max |expected|) (measured: at most 7.2e-7), masks exactly, except that with
/// several prompts and several images per prompt diffusers tiles the masks (repeat(n, 1)) where we repeat each with its
/// own prompt (a deliberate difference, asserted as such).
/// </summary>
public sealed class SanaPromptParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private const string Fixture = "local-diffusers/sana-prompt";
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected(Fixture + "/expected.safetensors");
    private static readonly JsonObject Cases =
        JsonNode.Parse(File.ReadAllText(Fixtures.Path(Fixture + "/cases.json")))!["cases"]!.AsObject();

    /// <summary>The sana fixture's transformer / VAE / scheduler with the tiny Gemma2 encoder and the Gemma tokenizer.</summary>
    private static SanaComponents Components()
    {
        string sana = Fixtures.Path("local-diffusers/sana");
        return new SanaComponents
        {
            Transformer = SanaTransformer2DModel.FromPretrained(Path.Combine(sana, "transformer"), ScalarType.Float32),
            Vae = AutoencoderDC.FromPretrained(Path.Combine(sana, "vae"), ScalarType.Float32),
            SchedulerConfig = SchedulerConfigText.Parse(SchedulerConfigText.Read(Path.Combine(sana, "scheduler"))),
            Device = CPU, Dtype = ScalarType.Float32,
            TextEncoder = Gemma2Model.FromPretrained(Fixtures.Path(Fixture + "/text_encoder"), ScalarType.Float32),
            Tokenizer = GemmaTokenizer.FromFolder(Fixtures.Path("local-diffusers/gemma-tokenizer/tokenizer")),
        };
    }

    private static PromptList Prompts(JsonNode node) => node is JsonArray a
        ? a.Select(p => p!.GetValue<string>()).ToArray()
        : node.GetValue<string>();

    /// <summary>The request that asks what the case's encode_prompt call asked.</summary>
    internal static SanaRequest Request(JsonObject c) => new()
    {
        Prompt = Prompts(c["prompt"]!),
        NegativePrompt = c["negative_prompt"] is { } n ? Prompts(n) : (PromptList?)null,
        // Guidance is what makes encode_prompt's do_classifier_free_guidance true in the pipeline.
        GuidanceScale = c["do_classifier_free_guidance"]!.GetValue<bool>() ? 4.5 : 1.0,
        NumImagesPerPrompt = c["num_images_per_prompt"]?.GetValue<int>() ?? 1,
        MaxSequenceLength = c["max_sequence_length"]?.GetValue<int>() ?? 300,
        // null: the pipeline's default instruction, which the script passed as diffusers' __call__ default.
        ComplexHumanInstruction = c["complex_human_instruction"] is JsonArray chi ? chi.Select(l => l!.GetValue<string>()).ToArray() : null,
    };

    [Theory]
    [InlineData("default")]
    [InlineData("two_prompts")]
    [InlineData("negatives")]
    [InlineData("images_per_prompt")]
    [InlineData("custom_instruction")]
    [InlineData("no_instruction")]
    [InlineData("default_length")]
    public void EncodePromptMatchesDiffusers(string name)
    {
        var c = Cases[name]!.AsObject();
        using var components = Components();
        using var pipe = new SanaPipeline(components);
        using var got = pipe.EncodePrompt(Request(c));
        bool cfg = c["do_classifier_free_guidance"]!.GetValue<bool>();
        double embeds = TensorAssert.Close(got.PromptEmbeds, _expected[$"{name}/prompt_embeds"], Tolerance, $"{name}/prompt_embeds");
        AssertMaskEqual(got.PromptAttentionMask, $"{name}/prompt_attention_mask");
        double negative = 0;
        if (cfg)
        {
            Assert.NotNull(got.NegativePromptEmbeds);
            negative = TensorAssert.Close(got.NegativePromptEmbeds!, _expected[$"{name}/negative_prompt_embeds"], Tolerance, $"{name}/negative_prompt_embeds");
            AssertMaskEqual(got.NegativePromptAttentionMask!, $"{name}/negative_prompt_attention_mask");
        }
        else
        {
            Assert.Null(got.NegativePromptEmbeds);
            Assert.False(_expected.ContainsKey($"{name}/negative_prompt_embeds"));
        }
        output.WriteLine($"{name}: prompt_embeds {string.Join("x", got.PromptEmbeds.shape)} max abs {embeds:G3}" +
                         (cfg ? $", negative_prompt_embeds max abs {negative:G3}" : "") + ", masks equal");
    }

    /// <summary>
    /// Two prompts with two images each: the embeddings match diffusers', the masks are diffusers' in the other order
    /// (the deliberate difference: diffusers tiles them, [m0, m1, m0, m1], next to embeddings [e0, e0, e1, e1]; ours are
    /// [m0, m0, m1, m1], each with its own prompt). The prompts' masks differ, so the two orders are told apart.
    /// </summary>
    [Fact]
    public void SeveralPromptsAndImagesPerPromptDifferFromDiffusersOnlyInMaskOrder()
    {
        const string name = PromptsAndImages;
        var c = Cases[name]!.AsObject();
        int n = c["num_images_per_prompt"]!.GetValue<int>();
        using var components = Components();
        using var pipe = new SanaPipeline(components);
        using var got = pipe.EncodePrompt(Request(c));
        MaskAssert.PromptsAndImagesDifferOnlyInMaskOrder(got, _expected, name, n, Tolerance, output);
    }

    private const string PromptsAndImages = "prompts_and_images";

    [Fact]
    public void EveryFixtureCaseIsTested() =>
        // The theory's names and the mask-order fact's case are the script's cases: a case added there must be added here.
        FixtureCases.AssertEveryCaseTested(typeof(SanaPromptParityTests).GetMethod(nameof(EncodePromptMatchesDiffusers))!, Cases, PromptsAndImages);

    [Fact]
    public void DefaultInstructionIsDiffusers()
    {
        var expected = JsonNode.Parse(File.ReadAllText(Fixtures.Path(Fixture + "/cases.json")))!["default_complex_human_instruction"]!
            .AsArray().Select(l => l!.GetValue<string>());
        Assert.Equal(expected, SanaPromptTokens.DefaultComplexHumanInstruction);
    }

    private void AssertMaskEqual(Tensor actual, string key) => MaskAssert.Equal(actual, _expected[key], key);

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
