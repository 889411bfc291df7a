using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Tokenizers;
using DiffusersSharp.Tests.Support;
using System.Text.Json.Nodes;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines.Flux2;

/// <summary>
/// Flux2KleinPromptEncoder against diffusers' OWN Flux2KleinPipeline._get_qwen3_prompt_embeds run from prompt strings
/// with transformers' own Qwen3Model (tools/reference/flux2_klein_prompt.py; fixture local-diffusers/flux2-klein-prompt,
/// on local-diffusers/qwen3's tiny 3-layer encoder and tokenizer): chat template with thinking off, padding to
/// max_sequence_length and truncation, the chosen hidden states stacked per token, padded positions kept.
/// </summary>
public sealed class Flux2KleinPromptEncoderTests(ITestOutputHelper output)
{
    private const string Qwen3Folder = "local-diffusers/qwen3";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/flux2-klein-prompt/expected.safetensors");

    // Float32: measured max |diff| 2.6e-6 on values up to 5.4 (the tests print it); TensorAssert scales the bound by
    // max(1, max |expected|), so 2e-6 x 5.4 = 1.1e-5, about four times the measured error.
    private const double Tolerance = 2e-6;

    private static string[] Prompts() =>
        JsonNode.Parse(File.ReadAllText(Fixtures.Path(Qwen3Folder + "/cases.json")))!["encode_prompts"]!.AsArray()
            .Select(p => p!.GetValue<string>()).ToArray();

    private static Flux2KleinPromptEncoder Encoder(Action<int, int>? onTruncated = null) =>
        new(Qwen2Tokenizer.FromFolder(Fixtures.Path(Qwen3Folder + "/tokenizer")), Qwen3Model.FromPretrained(Fixtures.Path(Qwen3Folder + "/text_encoder")))
        {
            OnTruncated = onTruncated,
        };

    [Fact]
    public void ThreePromptsCutAndPaddedMatchDiffusers()
    {
        var truncated = new List<(int, int)>();
        var encoder = Encoder((n, max) => truncated.Add((n, max)));
        using var _ = inference_mode();
        using var embeds = encoder.Encode(Prompts(), CPU, ScalarType.Float32, maxSequenceLength: 24, hiddenStatesLayers: [1, 2, 3]);
        Assert.Equal([3L, 24, 3 * 64], embeds.shape);
        Assert.Equal(ScalarType.Float32, embeds.dtype);
        double err = TensorAssert.Close(embeds, Expected["three.prompt_embeds"], Tolerance, "three");
        // The first and third prompts are cut at 24 tokens, the empty one is padded.
        Assert.Equal(2, truncated.Count);
        Assert.All(truncated, t => Assert.Equal(24, t.Item2));
        output.WriteLine($"three prompts, 24 tokens, layers (1, 2, 3): max |diff| vs diffusers {err:G3}");
    }

    [Fact]
    public void LayerOrderAndRepeatsMatchDiffusers()
    {
        var encoder = Encoder();
        using var _ = inference_mode();
        using var embeds = encoder.Encode(["A photo of a cat"], CPU, ScalarType.Float32, maxSequenceLength: 40, hiddenStatesLayers: [3, 0, 2, 2]);
        Assert.Equal([1L, 40, 4 * 64], embeds.shape);
        double err = TensorAssert.Close(embeds, Expected["cat_layers.prompt_embeds"], Tolerance, "cat_layers");
        output.WriteLine($"one prompt, 40 tokens, layers (3, 0, 2, 2): max |diff| vs diffusers {err:G3}");
    }

    /// <summary>The encoder runs in float32 and the stacked states are converted, as diffusers' <c>out.to(dtype)</c>: equal to the last bit.</summary>
    [Fact]
    public void DtypeConversionMatchesDiffusers()
    {
        var encoder = Encoder();
        using var _ = inference_mode();
        using var embeds = encoder.Encode(Prompts(), CPU, ScalarType.BFloat16, maxSequenceLength: 24, hiddenStatesLayers: [1, 2, 3]);
        Assert.Equal(ScalarType.BFloat16, embeds.dtype);
        var expected = Expected["three_bf16.prompt_embeds"];
        Assert.Equal(ScalarType.BFloat16, expected.dtype);
        // A float32 difference of 2.6e-6 can round to a neighbouring bfloat16 value (spacing 2^-7 relative).
        using var diff = (embeds.to(ScalarType.Float32) - expected.to(ScalarType.Float32)).abs();
        using var scale = expected.to(ScalarType.Float32).abs().clamp_min(1.0);
        double worst = (diff / scale).max().item<float>();
        Assert.True(worst <= 1.0 / 128, $"bfloat16 embeddings differ by {worst:G3} relative (more than one bfloat16 step)");
        output.WriteLine($"bfloat16: max relative |diff| {worst:G3}, bit-equal share {(diff == 0).to(ScalarType.Float32).mean().item<float>():P2}");
    }

    /// <summary>The ids and mask diffusers handed Qwen3 (its tokenizer's padding="max_length", truncation=True, thinking off).</summary>
    [Theory]
    [InlineData("three", 24)]
    [InlineData("cat_layers", 40)]
    public void IdsAreThoseDiffusersFedTheEncoder(string name, int maxSequenceLength)
    {
        var prompts = name == "three" ? Prompts() : ["A photo of a cat"];
        var tokenizer = Qwen2Tokenizer.FromFolder(Fixtures.Path(Qwen3Folder + "/tokenizer"));
        var batch = Qwen3ChatBatch.Tokenize(tokenizer, prompts, maxSequenceLength, padToMaxLength: true, enableThinking: false);
        Assert.Equal(Expected[$"{name}.input_ids"].data<long>().ToArray(), batch.Ids);
        Assert.Equal(Expected[$"{name}.attention_mask"].data<long>().ToArray(), batch.Mask);
    }

    [Fact]
    public void BadArgumentsGiveClearErrorsBeforeCompute()
    {
        var encoder = Encoder();
        var layers = Assert.Throws<ArgumentException>(() => encoder.Encode(["x"], CPU, ScalarType.Float32, 24, [1, 4]));
        Assert.Contains("outside [0, 3]", layers.Message);
        var negative = Assert.Throws<ArgumentException>(() => encoder.Encode(["x"], CPU, ScalarType.Float32, 24, [-1]));
        Assert.Contains("negative", negative.Message);
        Assert.Throws<ArgumentException>(() => encoder.Encode(["x"], CPU, ScalarType.Float32, 24, []));
        var length = Assert.Throws<ArgumentException>(() => encoder.Encode(["x"], CPU, ScalarType.Float32, 0));
        Assert.Contains("max_sequence_length", length.Message);
        Assert.Throws<ArgumentException>(() => encoder.Encode([], CPU, ScalarType.Float32));
        Assert.Throws<ArgumentException>(() => encoder.Encode([null!], CPU, ScalarType.Float32));
        // The default layers (9, 18, 27) are Qwen3-4B's: a 3-layer encoder rejects them up front.
        var defaults = Assert.Throws<ArgumentException>(() => encoder.Encode(["x"], CPU, ScalarType.Float32));
        Assert.Contains("9, 18, 27", defaults.Message);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => encoder.Encode(["x"], CPU, ScalarType.Float32, 24, [1], cts.Token));
    }
}
