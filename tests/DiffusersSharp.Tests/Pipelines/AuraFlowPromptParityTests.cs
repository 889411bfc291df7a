using System.Text.Json.Nodes;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.AuraFlow;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// <see cref="AuraFlowPipeline.EncodePrompt"/> against diffusers v0.39.0's own <c>AuraFlowPipeline.encode_prompt</c> from
/// prompt strings (fixture local-diffusers/auraflow-prompt, made by tools/reference/auraflow_prompt.py; its README says
/// how): Hugging Face's tokenizers library's ids of a Llama tokenizer.json whose config pads on the LEFT, as transformers'
/// LlamaTokenizerFast applies it, and transformers' own UMT5EncoderModel on diffusers' side; our LlamaTokenizer and
/// UMT5EncoderModel here. Each case of cases.json (diffusers' default width 256, guidance with the "" negative at the
/// prompts' width, a width that cuts one prompt, negative prompts, two images per prompt) is one request; the embeddings
/// (padded positions zeroed) within 1e-5 × max(1, max |expected|). diffusers' masks are not compared: encode_prompt
/// returns them expanded over the width and nothing reads them; the zeroed rows of the embeddings carry them.
/// </summary>
public sealed class AuraFlowPromptParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private const string Fixture = "local-diffusers/auraflow-prompt";
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected(Fixture + "/expected.safetensors");
    private static JsonObject Cases =>
        JsonNode.Parse(File.ReadAllText(Fixtures.Path(Fixture + "/cases.json")))!["cases"]!.AsObject();

    /// <summary>The auraflow fixture's components with the prompt fixture's tiny UMT5 and Llama tokenizer.</summary>
    internal static AuraFlowComponents Components() => AuraFlowParityTests.Components(
        textEncoder: UMT5EncoderModel.FromPretrained(Fixtures.Path(Fixture + "/text_encoder"), ScalarType.Float32),
        tokenizer: LlamaTokenizer.FromFolder(Fixtures.Path(Fixture + "/tokenizer")));

    private static PromptList Prompts(JsonNode node) => node is JsonArray a
        ? a.Select(p => p!.GetValue<string>()).ToArray()
        : node.GetValue<string>();

    [Theory]
    [InlineData("single")]
    [InlineData("two_prompts")]
    [InlineData("truncated")]
    [InlineData("negatives")]
    [InlineData("images_per_prompt")]
    public void EncodePromptMatchesDiffusers(string name)
    {
        var c = Cases[name]!.AsObject();
        using var components = Components();
        using var pipe = new AuraFlowPipeline(components);
        var truncated = new List<(int Length, int Limit)>();
        pipe.OnPromptTruncated = (_, length, limit) => truncated.Add((length, limit));
        bool cfg = c["do_classifier_free_guidance"]!.GetValue<bool>();
        using var got = pipe.EncodePrompt(new AuraFlowRequest
        {
            Prompt = Prompts(c["prompt"]!),
            NegativePrompt = c["negative_prompt"] is { } n ? Prompts(n) : (PromptList?)null,
            GuidanceScale = cfg ? 3.5 : 1.0,
            NumImagesPerPrompt = c["num_images_per_prompt"]?.GetValue<int>() ?? 1,
            MaxSequenceLength = c["max_sequence_length"]?.GetValue<int>() ?? 256,
            Height = 32, Width = 32,
        });
        double embeds = TensorAssert.Close(got.PromptEmbeds, _expected[$"{name}/prompt_embeds"], Tolerance, $"{name}/prompt_embeds");
        double negative = 0;
        if (cfg) negative = TensorAssert.Close(got.NegativePromptEmbeds!, _expected[$"{name}/negative_prompt_embeds"], Tolerance, $"{name}/negative_prompt_embeds");
        else Assert.Null(got.NegativePromptEmbeds);
        // The long prompt of "truncated" and the long negative prompt of "negatives" are cut (diffusers warns for the
        // first only: it does not check negatives).
        Assert.Equal(name is "truncated" or "negatives" ? 1 : 0, truncated.Count);
        output.WriteLine($"{name}: prompt_embeds {string.Join("x", got.PromptEmbeds.shape)} max abs {embeds:G3}" + (cfg ? $", negative max abs {negative:G3}" : ""));
    }

    [Fact]
    public void EveryFixtureCaseIsTested() =>
        // The theory's names are the script's cases: a case added there must be added here.
        FixtureCases.AssertEveryCaseTested(typeof(AuraFlowPromptParityTests).GetMethod(nameof(EncodePromptMatchesDiffusers))!, Cases);

    /// <summary>The tokenizer pads on the left (its config's padding_side): the padded positions at the start of each row
    /// are zero in diffusers' embeddings, and in ours.</summary>
    [Fact]
    public void LeftPaddingZeroesTheStartOfEachRow()
    {
        using var expected = _expected["single/prompt_embeds"].abs().sum(-1);
        Assert.Equal(0f, expected[0, 0].item<float>());
        Assert.NotEqual(0f, expected[0, -1].item<float>());
        Assert.Equal(PaddingSide.Left, LlamaTokenizer.FromFolder(Fixtures.Path(Fixture + "/tokenizer")).PaddingSide);
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
