using System.Text.Json.Nodes;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Pipelines.QwenImage;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines.QwenImage;

/// <summary>
/// QwenImagePromptEncoder against diffusers v0.39.0's own <c>QwenImagePipeline._get_qwen_prompt_embeds</c> with
/// transformers' own Qwen2-VL text model (tools/reference/qwen2_5_vl.py; fixture local-diffusers/qwen2-5-vl): two
/// prompts of different lengths, a prompt longer than 1024 + 34 tokens (truncated as transformers' tokenizer does) alone
/// and beside a short one. The tokenizer is local-diffusers/qwen3's small Qwen2-format one (same special tokens as
/// Qwen's, ids below 704), whose ids for each rendering Hugging Face's tokenizers library gave (hf_tokenizers.json).
/// </summary>
public sealed class QwenImagePromptEncoderTests(ITestOutputHelper output) : IDisposable
{
    private const string Folder = "local-diffusers/qwen2-5-vl";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "/expected.safetensors");
    private const double Tolerance = 1e-5;
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-qwenimage-prompt-").FullName;

    // tools/reference/qwen2_5_vl.py's PROMPTS and LONG.
    private const string Short = "A cat";
    private const string Medium = "A red fox sleeping under a tall pine tree, snow all around, morning light.";
    private static readonly string Long = string.Concat(Enumerable.Repeat("The quick brown fox jumps over the lazy dog. ", 80));

    private static string TokenizerFolder => Fixtures.Path("local-diffusers/qwen3/tokenizer");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<bool> Layouts => new() { true, false };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void TemplateAndTokenizationAreTransformers(bool tokenizerJson)
    {
        // Qwen-Image's tokenizer folder has no tokenizer.json (vocab.json + merges.txt + tokenizer_config.json).
        string folder = TokenizerFolder;
        if (!tokenizerJson)
        {
            foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer_config.json" })
                File.Copy(Path.Combine(TokenizerFolder, f), Path.Combine(_dir, f));
            folder = _dir;
        }
        var tokenizer = Qwen2Tokenizer.FromFolder(folder);
        var texts = JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/texts.json")))!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        var prompts = new[] { Short, Medium, Long };
        for (int i = 0; i < prompts.Length; i++)
        {
            string rendered = string.Format(System.Globalization.CultureInfo.InvariantCulture, QwenImagePromptEncoder.Template, prompts[i]);
            Assert.Equal(texts[i], rendered);
            var ids = tokenizer.EncodeToIds(rendered);
            Assert.Equal(Expected[$"text{i}.ids"].data<long>().ToArray(), ids.Select(id => (long)id).ToArray());
        }
        // <|im_start|> / <|im_end|> are single special tokens (with Qwen's own vocabulary the system turn and
        // "<|im_start|>user\n" are the 34 dropped tokens; this small vocabulary spends more tokens on the words).
        var first = tokenizer.EncodeToIds(texts[0]);
        Assert.Equal(tokenizer.TokenToId("<|im_start|>"), first[0]);
        Assert.Equal(3, first.Count(id => id == tokenizer.TokenToId("<|im_start|>")));
        Assert.Equal(2, first.Count(id => id == tokenizer.TokenToId("<|im_end|>")));
    }

    [Theory]
    [InlineData("mha", "two")]
    [InlineData("gqa", "two")]
    [InlineData("mha", "long")]
    [InlineData("gqa", "long_and_short")]
    public void PromptEmbedsAndMaskMatchDiffusers(string model, string tag)
    {
        string[] prompts = tag switch
        {
            "two" => [Short, Medium],
            "long" => [Long],
            _ => [Short, Long],
        };
        var tokenizer = Qwen2Tokenizer.FromFolder(TokenizerFolder);
        using var textEncoder = Qwen2_5_VLTextModel.FromPretrained(Fixtures.Path($"{Folder}/text_encoder_{model}"));
        var encoder = new QwenImagePromptEncoder(tokenizer, textEncoder);
        var (embeds, mask) = encoder.Encode(prompts, CPU, ScalarType.Float32);
        using (embeds)
        using (mask)
        {
            Assert.Equal(ScalarType.Int64, mask.dtype);
            Assert.Equal(Expected[$"{model}.{tag}.mask"].data<long>().ToArray(), mask.data<long>().ToArray());
            double err = TensorAssert.Close(embeds, Expected[$"{model}.{tag}.prompt_embeds"], Tolerance, $"{model} {tag} prompt_embeds");
            output.WriteLine($"{model} {tag}: prompt_embeds {string.Join("x", embeds.shape)}, max |diff| vs diffusers: {err:G3}");
            if (tag != "two") Assert.Equal(QwenImagePromptEncoder.TokenizerMaxLength, (int)embeds.shape[1]); // cut at 1024 + 34 - 34
        }
    }

    [Fact]
    public void NoPromptsOrANullPromptIsRefused()
    {
        var tokenizer = Qwen2Tokenizer.FromFolder(TokenizerFolder);
        using var textEncoder = Qwen2_5_VLTextModel.FromPretrained(Fixtures.Path($"{Folder}/text_encoder_mha"));
        var encoder = new QwenImagePromptEncoder(tokenizer, textEncoder);
        Assert.Throws<ArgumentException>(() => encoder.Encode([], CPU, ScalarType.Float32));
        Assert.Throws<ArgumentException>(() => encoder.Encode([Short, null!], CPU, ScalarType.Float32));
    }
}
