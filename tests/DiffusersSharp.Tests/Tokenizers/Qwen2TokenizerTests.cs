using System.Text.Json.Nodes;
using DiffusersSharp.Tokenizers;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Tokenizers;

/// <summary>
/// Qwen2Tokenizer against Hugging Face's tokenizers library (Rust): local-diffusers/qwen3's small Qwen2-format tokenizer
/// (our merges, Qwen2's pipeline and Qwen3's added tokens; see its README) and the ids the library gave
/// (hf_tokenizers.json): unicode, digits, contractions, newlines, space runs, emoji, astral letters, special tokens in
/// the chat template. Also Qwen3's chat template rendering, padding / truncation and the refusals.
/// </summary>
public sealed class Qwen2TokenizerTests : IDisposable
{
    private const string Folder = "local-diffusers/qwen3";
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-qwen2-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string TokenizerFolder => Fixtures.Path(Folder + "/tokenizer");

    private static List<(string Text, int[] Ids)> HfIds() =>
        JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/hf_tokenizers.json")))!["ids"]!.AsArray()
            .Select(e => (e!["text"]!.GetValue<string>(), e["ids"]!.AsArray().Select(i => i!.GetValue<int>()).ToArray()))
            .ToList();

    private static JsonObject Cases() => JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/cases.json")))!.AsObject();

    [Theory]
    [InlineData(true)]  // tokenizer.json (vocabulary, merges and added tokens)
    [InlineData(false)] // vocab.json + merges.txt, added tokens from tokenizer_config.json
    public void IdsMatchHuggingFaceTokenizers(bool tokenizerJson)
    {
        var tokenizer = Qwen2Tokenizer.Load(TokenizerFolder, preferTokenizerJson: tokenizerJson);
        var cases = HfIds();
        Assert.Equal(31, cases.Count);
        foreach (var (text, ids) in cases)
            Assert.True(ids.SequenceEqual(tokenizer.EncodeToIds(text)), $"'{text}': expected [{string.Join(", ", ids)}], got [{string.Join(", ", tokenizer.EncodeToIds(text))}]");
    }

    [Fact]
    public void MergesGivenAsPairsLoadTheSame()
    {
        // tokenizers 0.20+ writes merges as ["a", "b"] pairs.
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFolder, "tokenizer.json")))!.AsObject();
        var merges = json["model"]!["merges"]!.AsArray();
        json["model"]!["merges"] = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(m!.GetValue<string>().Split(' ').Select(p => (JsonNode)p!).ToArray())).ToArray());
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json.ToJsonString());
        File.Copy(Path.Combine(TokenizerFolder, "tokenizer_config.json"), Path.Combine(_dir, "tokenizer_config.json"));
        var tokenizer = Qwen2Tokenizer.FromFolder(_dir);
        foreach (var (text, ids) in HfIds()) Assert.Equal(ids, tokenizer.EncodeToIds(text));
    }

    [Fact]
    public void SpecialTokensAndLayoutAreQwen3s()
    {
        var tokenizer = Qwen2Tokenizer.FromFolder(TokenizerFolder);
        Assert.Equal(tokenizer.TokenToId("<|endoftext|>"), tokenizer.PadTokenId);
        Assert.Equal(tokenizer.TokenToId("<|im_end|>"), tokenizer.EosTokenId);
        Assert.Equal(682, tokenizer.VocabSize); // 656 BPE tokens + 26 added
        Assert.Equal(131072, tokenizer.ModelMaxLength);

        var body = tokenizer.EncodeToIds("A photo of a cat");
        var padded = tokenizer.Encode("A photo of a cat", 8);
        Assert.Equal(body.Concat(Enumerable.Repeat(tokenizer.PadTokenId, 8 - body.Count)), padded.Ids); // no BOS / EOS
        Assert.Equal(body.Count, padded.UntruncatedLength);
        Assert.False(padded.WasTruncated);

        var cut = tokenizer.Encode("A photo of a cat", 2);
        Assert.Equal(body.Take(2), cut.Ids);
        Assert.Equal(body.Skip(2), cut.TruncatedIds);
        Assert.Equal(body, tokenizer.Encode("A photo of a cat", 2, truncate: false).Ids);
        Assert.Empty(tokenizer.Encode("", 3, padToMaxLength: false).Ids);
    }

    [Fact]
    public void DigitsAreSplitOneByOne()
    {
        // Qwen2's pattern: a lone space before a digit stays alone, digits one by one, letters with one leading non-letter.
        Assert.Equal(["in", " ", "2", "0", "2", "5", ",", " ", "3", "5", "mm"], Qwen2PreTokenizer.Split("in 2025, 35mm"));
        Assert.Equal(["Hello", ",", " world", "!\n\n", " ", " x"], Qwen2PreTokenizer.Split("Hello, world!\n\n  x"));
        Assert.Equal(["I", "'m", " fine", "'S", "ſ", "'ſ"], Qwen2PreTokenizer.Split("I'm fine'Sſ'ſ"));
        Assert.Equal(["a𝐀b", " ", "𝟎", "𝟏"], Qwen2PreTokenizer.Split("a𝐀b 𝟎𝟏")); // astral letters and digits
    }

    [Fact]
    public void DecodeGivesTheNormalisedTextWithoutSpecialTokens()
    {
        var tokenizer = Qwen2Tokenizer.FromFolder(TokenizerFolder);
        foreach (var (text, ids) in HfIds().Where(c => !c.Text.Contains('<')))
            Assert.Equal(UnicodeNfc.Normalize(text), tokenizer.Decode(ids)); // the library's NFC, decoded
        var template = Qwen3ChatTemplate.ApplyUserMessage("A photo of a cat", enableThinking: false);
        Assert.Equal("user\nA photo of a cat\nassistant\n<think>\n\n</think>\n\n", tokenizer.Decode(tokenizer.EncodeToIds(template)));
    }

    /// <summary>NFC as UAX #15 defines it (the project's InvariantGlobalization makes string.Normalize a no-op here).</summary>
    [Theory]
    [InlineData("Cafe\u0301", "Caf\u00e9")]
    [InlineData("\u212b \u2126", "\u00c5 \u03a9")]                // singletons
    [InlineData("\u1100\u1161\u11a8", "\uac01")]                  // Hangul L V T
    [InlineData("e\u0323\u0302 e\u0302\u0323", "\u1ec7 \u1ec7")] // marks reordered by combining class, then composed
    [InlineData("\u0958 \u0344", "\u0915\u093c \u0308\u0301")]   // excluded composition, non-starter decomposition
    [InlineData("\ufb01 \u00bd \u0301x", "\ufb01 \u00bd \u0301x")] // compatibility forms kept; a leading mark stays
    [InlineData("a\u0301\u0301", "\u00e1\u0301")]                 // the second mark is blocked by the first
    [InlineData("\U0001D400 plain ASCII", "\U0001D400 plain ASCII")]
    public void UnicodeNfcComposesCanonically(string text, string nfc) => Assert.Equal(nfc, UnicodeNfc.Normalize(text));

    [Fact]
    public void ChatTemplateRendersQwen3sUserTurn()
    {
        var cases = Cases();
        var thinking = cases["chat_template"]!.AsObject();
        var noThinking = cases["chat_template_no_thinking"]!.AsObject();
        Assert.Equal(4, thinking.Count);
        foreach (var (prompt, rendered) in thinking)
        {
            Assert.Equal(rendered!.GetValue<string>(), Qwen3ChatTemplate.ApplyUserMessage(prompt));
            Assert.Equal(noThinking[prompt]!.GetValue<string>(), Qwen3ChatTemplate.ApplyUserMessage(prompt, enableThinking: false));
        }
        Assert.Equal("<|im_start|>user\nhi<|im_end|>\n", Qwen3ChatTemplate.ApplyUserMessage("hi", addGenerationPrompt: false));
        Assert.Equal("<|im_start|>user\nhi<|im_end|>\n", Qwen3ChatTemplate.ApplyUserMessage("hi", addGenerationPrompt: false, enableThinking: false));
    }

    [Fact]
    public void MissingFilesAreFileNotFound()
    {
        Assert.Throws<DirectoryNotFoundException>(() => Qwen2Tokenizer.FromFolder(Path.Combine(_dir, "nope")));
        var e = Assert.Throws<FileNotFoundException>(() => Qwen2Tokenizer.FromFolder(_dir));
        Assert.Contains("tokenizer.json", e.Message);
        File.Copy(Path.Combine(TokenizerFolder, "vocab.json"), Path.Combine(_dir, "vocab.json"));
        Assert.Throws<FileNotFoundException>(() => Qwen2Tokenizer.FromFolder(_dir)); // merges.txt missing
    }

    [Theory]
    [InlineData("pre_tokenizer")]
    [InlineData("normalizer")]
    [InlineData("byte_fallback")]
    [InlineData("split_special_tokens")]
    public void OtherPipelinesAreRefused(string change)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFolder, "tokenizer.json")))!.AsObject();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFolder, "tokenizer_config.json")))!.AsObject();
        switch (change)
        {
            case "pre_tokenizer": // GPT-2's pattern (digits grouped) is not Qwen2's
                json["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
                break;
            case "normalizer":
                json["normalizer"] = new JsonObject { ["type"] = "NFKC" };
                break;
            case "byte_fallback":
                json["model"]!["byte_fallback"] = true;
                break;
            case "split_special_tokens":
                config["split_special_tokens"] = true;
                break;
        }
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json.ToJsonString());
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), config.ToJsonString());
        Assert.Throws<NotSupportedException>(() => Qwen2Tokenizer.FromFolder(_dir));
    }

    [Fact]
    public void UnknownPadTokenIsInvalidData()
    {
        File.Copy(Path.Combine(TokenizerFolder, "tokenizer.json"), Path.Combine(_dir, "tokenizer.json"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFolder, "tokenizer_config.json")))!.AsObject();
        config["pad_token"] = "<|no_such_token|>";
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), config.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => Qwen2Tokenizer.FromFolder(_dir));
        Assert.Contains("<|no_such_token|>", e.Message);
    }
}
