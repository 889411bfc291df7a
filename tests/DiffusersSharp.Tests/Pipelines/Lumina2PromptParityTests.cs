using System.Text.Json.Nodes;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Lumina2;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// <see cref="Lumina2Pipeline.EncodePrompt"/> against diffusers v0.39.0's own <c>Lumina2Pipeline.encode_prompt</c> from
/// prompt strings (fixture local-diffusers/lumina2-prompt, made by tools/reference/lumina2_prompt.py; its README says
/// how): Hugging Face's tokenizers library's ids of the gemma-tokenizer fixture's tokenizer.json and transformers' own
/// Gemma2Model with output_hidden_states (sana-prompt's tiny text encoder) on diffusers' side; our GemmaTokenizer and
/// Gemma2Model.HiddenState(-2) here. Each case of cases.json (the default system prompt at diffusers' default width 256,
/// guidance with the "" negative, a width that cuts one prompt, negative prompts with a system prompt of our own, an
/// empty system prompt, two images per prompt) is one request; embeddings within 1e-5 × max(1, max |expected|), masks
/// exactly, except that with several prompts and several images per prompt diffusers tiles the masks (repeat(n, 1))
/// where we repeat each with its own prompt (a deliberate difference, asserted as such).
/// </summary>
public sealed class Lumina2PromptParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private const string Fixture = "local-diffusers/lumina2-prompt";
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected(Fixture + "/expected.safetensors");
    private static readonly JsonObject CasesFile = JsonNode.Parse(File.ReadAllText(Fixtures.Path(Fixture + "/cases.json")))!.AsObject();
    private static JsonObject Cases => CasesFile["cases"]!.AsObject();

    /// <summary>The lumina2 fixture's components with sana-prompt's tiny Gemma2 encoder and the Gemma tokenizer.</summary>
    internal static Lumina2Components Components() => Lumina2ParityTests.Components(
        textEncoder: Gemma2Model.FromPretrained(Fixtures.Path("local-diffusers/sana-prompt/text_encoder"), ScalarType.Float32),
        tokenizer: GemmaTokenizer.FromFolder(Fixtures.Path("local-diffusers/gemma-tokenizer/tokenizer")));

    private static PromptList Prompts(JsonNode node) => node is JsonArray a
        ? a.Select(p => p!.GetValue<string>()).ToArray()
        : node.GetValue<string>();

    /// <summary>The request that asks what the case's encode_prompt call asked.</summary>
    internal static Lumina2Request Request(JsonObject c) => new()
    {
        Prompt = Prompts(c["prompt"]!),
        NegativePrompt = c["negative_prompt"] is { } n ? Prompts(n) : (PromptList?)null,
        // Guidance is what makes encode_prompt's do_classifier_free_guidance true in the pipeline.
        GuidanceScale = c["do_classifier_free_guidance"]!.GetValue<bool>() ? 4.0 : 1.0,
        NumImagesPerPrompt = c["num_images_per_prompt"]?.GetValue<int>() ?? 1,
        MaxSequenceLength = c["max_sequence_length"]?.GetValue<int>() ?? 256,
        SystemPrompt = c["system_prompt"]?.GetValue<string>(),
        Height = 32, Width = 32,
    };

    [Theory]
    [InlineData("single")]
    [InlineData("two_prompts")]
    [InlineData("truncated")]
    [InlineData("negatives")]
    [InlineData("empty_system")]
    [InlineData("images_per_prompt")]
    public void EncodePromptMatchesDiffusers(string name)
    {
        var c = Cases[name]!.AsObject();
        using var components = Components();
        using var pipe = new Lumina2Pipeline(components);
        var truncated = new List<(int Length, int Limit)>();
        pipe.OnPromptTruncated = (_, length, limit) => truncated.Add((length, limit));
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
        // Only the long prompt of "truncated" is cut (diffusers logs its warning for that batch).
        Assert.Equal(name == "truncated" ? 1 : 0, truncated.Count);
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
        using var pipe = new Lumina2Pipeline(components);
        using var got = pipe.EncodePrompt(Request(c));
        MaskAssert.PromptsAndImagesDifferOnlyInMaskOrder(got, _expected, name, n, Tolerance, output);
    }

    private const string PromptsAndImages = "prompts_and_images";

    [Fact]
    public void EveryFixtureCaseIsTested() =>
        // The theory's names and the mask-order fact's case are the script's cases: a case added there must be added here.
        FixtureCases.AssertEveryCaseTested(typeof(Lumina2PromptParityTests).GetMethod(nameof(EncodePromptMatchesDiffusers))!, Cases, PromptsAndImages);

    [Fact]
    public void DefaultSystemPromptIsDiffusers() =>
        Assert.Equal(Lumina2Request.DefaultSystemPrompt, CasesFile["default_system_prompt"]!.GetValue<string>());

    private void AssertMaskEqual(Tensor actual, string key) => MaskAssert.Equal(actual, _expected[key], key);

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
