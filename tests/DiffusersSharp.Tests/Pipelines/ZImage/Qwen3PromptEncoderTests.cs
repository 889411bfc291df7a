using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Tokenizers;
using DiffusersSharp.Tests.Support;
using System.Text.Json.Nodes;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines.ZImage;

/// <summary>
/// Qwen3PromptEncoder against diffusers' OWN ZImagePipeline._encode_prompt (tools/reference/qwen3.py; fixture
/// local-diffusers/qwen3): our tokenizer and text encoder end to end (chat template, ids, hidden_states[-2], the real
/// tokens of each prompt) for the fixture's three prompts (one empty, as the negative prompt under CFG) at
/// max_sequence_length 512 and 12 (cut inside the template).
/// </summary>
public sealed class Qwen3PromptEncoderTests(ITestOutputHelper output)
{
    private const string Folder = "local-diffusers/qwen3";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "/expected.safetensors");

    /// <summary>Bound: 1e-5 x max(1, max |expected|), as the model parity test (diffusers padded to max_sequence_length,
    /// we to the longest prompt: the kept positions are the same).</summary>
    private const double Tolerance = 1e-5;

    private static string[] Prompts() =>
        JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/cases.json")))!["encode_prompts"]!.AsArray()
            .Select(p => p!.GetValue<string>()).ToArray();

    private static Qwen3PromptEncoder Encoder(ScalarType? dtype = null, Action<int, int>? onTruncated = null) =>
        new(Qwen2Tokenizer.FromFolder(Fixtures.Path(Folder + "/tokenizer")), Qwen3Model.FromPretrained(Fixtures.Path(Folder + "/text_encoder"), dtype))
        {
            OnTruncated = onTruncated,
        };

    [Theory]
    [InlineData("encode512", 512)]
    [InlineData("encode12", 12)]
    public void MatchesDiffusersEncodePrompt(string name, int maxSequenceLength)
    {
        var truncated = new List<(int, int)>();
        var encoder = Encoder(onTruncated: (n, max) => truncated.Add((n, max)));
        var prompts = Prompts();
        using var _ = inference_mode();
        var embeds = encoder.Encode(prompts, maxSequenceLength);
        Assert.Equal(prompts.Length, embeds.Count);
        double worst = 0;
        var mask = Expected[$"{name}.attention_mask"];
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(mask[i].sum().item<long>(), embeds[i].shape[0]);
            worst = Math.Max(worst, TensorAssert.Close(embeds[i], Expected[$"{name}.prompt_embeds.{i}"], Tolerance, $"{name}[{i}]"));
            embeds[i].Dispose();
        }
        Assert.Equal(maxSequenceLength == 12 ? prompts.Length : 0, truncated.Count);
        output.WriteLine($"{name}: max |diff| vs diffusers' _encode_prompt {worst:G3}");
    }

    [Fact]
    public void IdsAreThoseDiffusersFedTheEncoder()
    {
        var tokenizer = Qwen2Tokenizer.FromFolder(Fixtures.Path(Folder + "/tokenizer"));
        var prompts = Prompts();
        var ids = Expected["encode512.input_ids"];
        for (int i = 0; i < prompts.Length; i++)
        {
            var ours = tokenizer.Encode(Qwen3ChatTemplate.ApplyUserMessage(prompts[i]), 512).Ids;
            Assert.Equal(ids[i].data<long>().Select(v => (int)v), ours);
        }
    }

    [Fact]
    public void OutputsFollowTheEncodersDtype()
    {
        var encoder = Encoder(ScalarType.BFloat16);
        using var _ = inference_mode();
        var embeds = encoder.Encode(["A photo of a cat"]);
        Assert.Equal(ScalarType.BFloat16, embeds[0].dtype);
        int tokens = Qwen2Tokenizer.FromFolder(Fixtures.Path(Folder + "/tokenizer")).EncodeToIds(Qwen3ChatTemplate.ApplyUserMessage("A photo of a cat")).Count;
        Assert.Equal([tokens, 64L], embeds[0].shape);
        embeds[0].Dispose();
    }

    [Fact]
    public void BadArgumentsAndCancellationAreRefusedBeforeCompute()
    {
        var encoder = Encoder();
        Assert.Throws<ArgumentException>(() => encoder.Encode([]));
        Assert.Throws<ArgumentException>(() => encoder.Encode([null!]));
        Assert.Throws<ArgumentException>(() => encoder.Encode(["a"], 0));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => encoder.Encode(["a"], cancellationToken: cts.Token));
    }

    [Fact]
    public void EncodeLeaksNoTensors()
    {
        var encoder = Encoder();
        using var _ = inference_mode();
        foreach (var t in encoder.Encode(Prompts())) t.Dispose();
        long before = LiveTensors.Count();
        foreach (var t in encoder.Encode(Prompts())) t.Dispose();
        Assert.Equal(before, LiveTensors.Count());
    }
}
