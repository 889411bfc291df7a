using System.Text.Json.Nodes;
using DiffusersSharp.Tokenizers;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Tokenizers;

/// <summary>
/// GemmaTokenizer against Hugging Face's tokenizers library (Rust): local-diffusers/gemma-tokenizer's small Gemma-format
/// tokenizer (Gemma's pipeline, options and added tokens; our vocabulary and merges; see its README) and the ids the
/// library gave (hf_tokenizers.json): plain text, space runs, newlines and tabs, accents / CJK / emoji through byte
/// fallback, added tokens inside text, ignore_merges, unk with and without fuse_unk, add_eos_token, padded and truncated
/// batches with their attention masks, and SanaPipeline's complex-human-instruction batch. Also the refusals.
/// </summary>
public sealed class GemmaTokenizerTests : IDisposable
{
    private const string Folder = "local-diffusers/gemma-tokenizer";
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-gemma-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string TokenizerFolder => Fixtures.Path(Folder + "/tokenizer");

    private static JsonObject Hf() => JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/hf_tokenizers.json")))!.AsObject();

    private static int[] Ints(JsonNode? array) => array!.AsArray().Select(i => i!.GetValue<int>()).ToArray();

    private static List<(string Text, int[] Ids)> Texts(string variant) =>
        Hf()["texts"]!.AsArray().Select(t => (t!["text"]!.GetValue<string>(), Ints(t[variant]))).ToList();

    /// <summary>A copy of the fixture tokenizer with tokenizer.json / tokenizer_config.json edited.</summary>
    private string Edited(Action<JsonObject>? tokenizerJson = null, Action<JsonObject>? config = null)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFolder, "tokenizer.json")))!.AsObject();
        tokenizerJson?.Invoke(json);
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json.ToJsonString());
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFolder, "tokenizer_config.json")))!.AsObject();
        config?.Invoke(cfg);
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), cfg.ToJsonString());
        File.Copy(Path.Combine(TokenizerFolder, "special_tokens_map.json"), Path.Combine(_dir, "special_tokens_map.json"), overwrite: true);
        return _dir;
    }

    private static void AssertIds(GemmaTokenizer tokenizer, List<(string Text, int[] Ids)> cases)
    {
        foreach (var (text, ids) in cases)
        {
            var got = tokenizer.Encode(text);
            Assert.True(ids.SequenceEqual(got), $"'{text}': expected [{string.Join(", ", ids)}], got [{string.Join(", ", got)}]");
        }
    }

    [Fact]
    public void IdsMatchHuggingFaceTokenizers()
    {
        var cases = Texts("ids");
        Assert.Equal(27, cases.Count);
        AssertIds(GemmaTokenizer.FromFolder(TokenizerFolder), cases);
    }

    [Theory]
    [InlineData("ids_ignore_merges")]
    [InlineData("ids_no_byte_fallback")]
    [InlineData("ids_no_byte_fallback_no_fuse")]
    [InlineData("ids_partial_bytes")]       // <unk> among byte pieces: the library writes it after them
    [InlineData("ids_split_pre_tokenizer")] // newer GemmaConverter's Split(" ", MergedWithPrevious): the same ids
    public void ModelOptionsMatchHuggingFaceTokenizers(string variant)
    {
        string folder = Edited(json =>
        {
            var model = json["model"]!;
            switch (variant)
            {
                case "ids_ignore_merges": model["ignore_merges"] = true; break;
                case "ids_no_byte_fallback": model["byte_fallback"] = false; break;
                case "ids_no_byte_fallback_no_fuse": model["byte_fallback"] = false; model["fuse_unk"] = false; break;
                case "ids_partial_bytes": model["vocab"]!.AsObject().Remove("<0xE6>"); model["vocab"]!.AsObject().Remove("<0x31>"); break;
                case "ids_split_pre_tokenizer":
                    json["pre_tokenizer"] = new JsonObject
                    {
                        ["type"] = "Split", ["pattern"] = new JsonObject { ["String"] = " " }, ["behavior"] = "MergedWithPrevious", ["invert"] = false,
                    };
                    break;
            }
        });
        var cases = Texts(variant);
        // The option variants must differ from the plain ids somewhere, or they would test nothing.
        if (variant != "ids_split_pre_tokenizer") Assert.Contains(cases.Zip(Texts("ids")), p => !p.First.Ids.SequenceEqual(p.Second.Ids));
        AssertIds(GemmaTokenizer.FromFolder(folder), cases);
    }

    [Fact]
    public void AddEosTokenMatchesTheLibrarysBosTextEosTemplate()
    {
        var tokenizer = GemmaTokenizer.FromFolder(Edited(config: c => c["add_eos_token"] = true));
        Assert.True(tokenizer.AddEosToken);
        AssertIds(tokenizer, Texts("ids_add_eos"));
    }

    [Fact]
    public void MergesGivenAsPairsLoadTheSame()
    {
        // tokenizers 0.20+ writes merges as ["a", "b"] pairs.
        string folder = Edited(json =>
        {
            var merges = json["model"]!["merges"]!.AsArray();
            json["model"]!["merges"] = new JsonArray(merges.Select(m =>
                (JsonNode)new JsonArray(m!.GetValue<string>().Split(' ').Select(p => (JsonNode)p!).ToArray())).ToArray());
        });
        AssertIds(GemmaTokenizer.FromFolder(folder), Texts("ids"));
    }

    [Fact]
    public void PaddedBatchesMatchTheLibrarysTruncationAndPadding()
    {
        var tokenizer = GemmaTokenizer.FromFolder(TokenizerFolder);
        var batches = Hf()["batches"]!.AsArray();
        Assert.Equal(3, batches.Count);
        foreach (var b in batches)
        {
            var texts = b!["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
            int maxLength = b["max_length"]!.GetValue<int>();
            var side = b["direction"]!.GetValue<string>() == "Left" ? PaddingSide.Left : PaddingSide.Right;
            var batch = tokenizer.EncodeBatch(texts, maxLength, truncate: true, side);
            Assert.Equal(texts.Count, batch.Count);
            Assert.Equal(maxLength, batch.Width);
            for (int i = 0; i < texts.Count; i++)
            {
                Assert.Equal(Ints(b["input_ids"]![i]).Select(x => (long)x), batch.RowIds(i));
                Assert.Equal(Ints(b["attention_mask"]![i]).Select(x => (long)x), batch.RowMask(i));
            }
        }
    }

    [Fact]
    public void PaddingSideDefaultsToTheConfigs()
    {
        var tokenizer = GemmaTokenizer.FromFolder(TokenizerFolder);
        Assert.Equal(PaddingSide.Left, tokenizer.PaddingSide); // the fixture's tokenizer_config.json says "left"
        var left16 = Hf()["batches"]!.AsArray().Single(b => b!["name"]!.GetValue<string>() == "left16")!;
        var texts = left16["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        var batch = tokenizer.EncodeBatch(texts, 16);
        for (int i = 0; i < texts.Count; i++) Assert.Equal(Ints(left16["input_ids"]![i]).Select(x => (long)x), batch.RowIds(i));
        Assert.Equal(PaddingSide.Right, GemmaTokenizer.FromFolder(Edited(config: c => c.Remove("padding_side"))).PaddingSide);
    }

    [Fact]
    public void SanaBatchesMatchTheLibraryAsThePipelineCallsIt()
    {
        var tokenizer = GemmaTokenizer.FromFolder(TokenizerFolder);
        var sana = Hf()["sana"]!;
        var cases = JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/cases.json")))!["sana"]!;
        var instruction = cases["complex_human_instruction"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        // cases.json has the list as diffusers v0.39.0's pipeline_sana.py writes it.
        Assert.Equal(instruction, SanaPromptTokens.DefaultComplexHumanInstruction);
        Assert.Equal(sana["num_chi_prompt_tokens"]!.GetValue<int>(), tokenizer.Encode(string.Join("\n", instruction)).Count);
        int maxSequenceLength = cases["max_sequence_length"]!.GetValue<int>();
        foreach (var (key, chi) in new[] { ("with_instruction", instruction), ("without_instruction", (List<string>?)null) })
        {
            var expected = sana[key]!;
            var prompts = key == "with_instruction"
                ? cases["prompts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList()
                : cases["no_instruction_prompts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
            var batch = SanaPromptTokens.Tokenize(tokenizer, prompts, maxSequenceLength, chi);
            Assert.Equal(expected["max_length"]!.GetValue<int>(), batch.Width);
            for (int i = 0; i < prompts.Count; i++)
            {
                Assert.Equal(Ints(expected["input_ids"]![i]).Select(x => (long)x), batch.RowIds(i));
                Assert.Equal(Ints(expected["attention_mask"]![i]).Select(x => (long)x), batch.RowMask(i));
            }
            Assert.True(batch.WasTruncated); // the last prompt is longer than max_sequence_length
        }
        Assert.Equal(sana["max_length_all"]!.GetValue<int>(), sana["with_instruction"]!["max_length"]!.GetValue<int>());
    }

    [Fact]
    public void SpecialTokensAreGemmas()
    {
        var tokenizer = GemmaTokenizer.FromFolder(TokenizerFolder);
        Assert.Equal(0, tokenizer.PadTokenId);
        Assert.Equal(1, tokenizer.EosTokenId);
        Assert.Equal(2, tokenizer.BosTokenId);
        Assert.Equal(3, tokenizer.UnkTokenId);
        Assert.True(tokenizer.AddBosToken);
        Assert.False(tokenizer.AddEosToken);
        Assert.Equal(8192, tokenizer.ModelMaxLength);
        Assert.Equal(623, tokenizer.VocabSize);
        Assert.Equal(10, tokenizer.TokenToId("<start_of_turn>"));
        Assert.Equal("\t", tokenizer.IdToToken(tokenizer.TokenToId("\t")!.Value)); // <0x09> is written "\t", as in Gemma
        Assert.Null(tokenizer.TokenToId("<0x09>"));
        Assert.Equal(["<start_of_turn>", "user", "\n", "A", "▁c", "at"], tokenizer.Tokenize("<start_of_turn>user\nA cat"));

        // Truncation keeps <bos>; the single-text layout pads on the right with <pad>.
        var encoded = tokenizer.Encode("a cat sitting on a wooden table", 4);
        Assert.Equal([2, .. tokenizer.Encode("a cat sitting on a wooden table", addSpecialTokens: false).Take(3)], encoded.Ids);
        Assert.True(encoded.WasTruncated);
        Assert.Equal([2, 0, 0], tokenizer.Encode("", 3).Ids);
    }

    [Fact]
    public void DecodeInvertsEncode()
    {
        var tokenizer = GemmaTokenizer.FromFolder(TokenizerFolder);
        foreach (string text in new[] { "A photo of a cat.", "  two  spaces\tand\ttabs\n\nlines ", "Café Zürich 日本の猫 🐱👍🏽 𝔘𝔫", "" })
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
        // Special tokens are left out, other added tokens kept; an invalid byte run gives one U+FFFD per byte.
        Assert.Equal("user\nhi", tokenizer.Decode(tokenizer.Encode("<start_of_turn>user\nhi<end_of_turn>")));
        int b = tokenizer.TokenToId("<0xF0>")!.Value;
        Assert.Equal("a\uFFFD\uFFFD", tokenizer.Decode([tokenizer.TokenToId("a")!.Value, b, b]));
    }

    [Fact]
    public void BadFoldersAndFilesAreRefusedWithClearErrors()
    {
        Assert.Throws<DirectoryNotFoundException>(() => GemmaTokenizer.FromFolder(Path.Combine(_dir, "missing")));
        var e1 = Assert.Throws<FileNotFoundException>(() => GemmaTokenizer.FromFolder(_dir));
        Assert.Contains("tokenizer.json", e1.Message);

        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), "{ \"model\": { \"type\": \"BPE\", ");
        var e2 = Assert.Throws<InvalidDataException>(() => GemmaTokenizer.FromFolder(_dir));
        Assert.Contains("not valid JSON", e2.Message);

        Assert.Contains("merges", Assert.Throws<InvalidDataException>(() =>
            GemmaTokenizer.FromFolder(Edited(json => json["model"]!.AsObject().Remove("merges")))).Message);
        Assert.Contains("not in the vocabulary", Assert.Throws<InvalidDataException>(() =>
            GemmaTokenizer.FromFolder(Edited(json => json["model"]!["merges"]!.AsArray().Add("▁zz q")))).Message);
        Assert.Contains("two pieces", Assert.Throws<InvalidDataException>(() =>
            GemmaTokenizer.FromFolder(Edited(json => json["model"]!["merges"]!.AsArray().Add("a b c")))).Message);
        Assert.Contains("padding_side", Assert.Throws<InvalidDataException>(() =>
            GemmaTokenizer.FromFolder(Edited(config: c => c["padding_side"] = "middle"))).Message);
        Assert.Contains("pad_token", Assert.Throws<InvalidDataException>(() =>
            GemmaTokenizer.FromFolder(Edited(config: c => c["pad_token"] = "<nothing>"))).Message);

        Assert.Throws<NotSupportedException>(() => GemmaTokenizer.FromFolder(Edited(json =>
            json["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁" })));
        Assert.Throws<NotSupportedException>(() => GemmaTokenizer.FromFolder(Edited(json => json["model"]!["dropout"] = 0.1)));
        Assert.Throws<NotSupportedException>(() => GemmaTokenizer.FromFolder(Edited(json => json["model"]!["type"] = "Unigram")));
        Assert.Throws<NotSupportedException>(() => GemmaTokenizer.FromFolder(Edited(json =>
            json["normalizer"] = new JsonObject { ["type"] = "Lowercase" })));

        var tokenizer = GemmaTokenizer.FromFolder(TokenizerFolder);
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.EncodeBatch(["a cat"], 0));
        Assert.Throws<ArgumentException>(() => tokenizer.EncodeBatch(["a cat sitting on a wooden table"], 3, truncate: false));
        Assert.Throws<ArgumentException>(() => tokenizer.EncodeBatch([], 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => SanaPromptTokens.Tokenize(tokenizer, ["a cat"], 1));
    }
}
