using System.Text.Json.Nodes;
using DiffusersSharp.Tokenizers;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Tokenizers;

/// <summary>
/// LlamaTokenizer against Hugging Face's tokenizers library (Rust): local-diffusers/llama-tokenizer's small Llama-format
/// tokenizer in both layouts transformers writes (legacy: Prepend("▁") + Replace normaliser; newer: Metaspace "first"
/// pre-tokenizer; our vocabulary and merges, see its README) and the ids the library gave (hf_tokenizers.json): plain
/// text, leading / double / trailing spaces, newlines and tabs, accents / CJK / emoji through byte fallback, added tokens
/// inside text, a normalized added token, the empty string, the four bos / eos templates, and padded, truncated batches
/// (AuraFlowPipeline's max_length 256) with their attention masks. Also the refusals.
/// </summary>
public sealed class LlamaTokenizerTests : IDisposable
{
    private const string Folder = "local-diffusers/llama-tokenizer";
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-llama-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string TokenizerFolder(string layout) => Fixtures.Path($"{Folder}/tokenizer-{layout}");

    private static JsonObject Hf(string layout) =>
        JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/hf_tokenizers.json")))![layout]!.AsObject();

    private static int[] Ints(JsonNode? array) => array!.AsArray().Select(i => i!.GetValue<int>()).ToArray();

    private static List<(string Text, int[] Ids)> Texts(string layout, string variant) =>
        Hf(layout)["texts"]!.AsArray().Select(t => (t!["text"]!.GetValue<string>(), Ints(t[variant]))).ToList();

    /// <summary>A copy of a fixture tokenizer with tokenizer.json / tokenizer_config.json edited.</summary>
    private string Edited(string layout, Action<JsonObject>? tokenizerJson = null, Action<JsonObject>? config = null)
    {
        string source = TokenizerFolder(layout);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "tokenizer.json")))!.AsObject();
        tokenizerJson?.Invoke(json);
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json.ToJsonString());
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "tokenizer_config.json")))!.AsObject();
        config?.Invoke(cfg);
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), cfg.ToJsonString());
        File.Copy(Path.Combine(source, "special_tokens_map.json"), Path.Combine(_dir, "special_tokens_map.json"), overwrite: true);
        return _dir;
    }

    private static void AssertIds(LlamaTokenizer tokenizer, List<(string Text, int[] Ids)> cases)
    {
        foreach (var (text, ids) in cases)
        {
            var got = tokenizer.Encode(text);
            Assert.True(ids.SequenceEqual(got), $"'{text}': expected [{string.Join(", ", ids)}], got [{string.Join(", ", got)}]");
        }
    }

    [Theory]
    [InlineData("legacy")]
    [InlineData("metaspace")]
    public void IdsMatchHuggingFaceTokenizers(string layout)
    {
        var cases = Texts(layout, "ids");
        Assert.Equal(25, cases.Count);
        AssertIds(LlamaTokenizer.FromFolder(TokenizerFolder(layout)), cases);
    }

    [Fact]
    public void TheTwoLayoutsDifferWhereTransformersSaysTheyDo()
    {
        // "Hello <s>." is transformers' own legacy example: the legacy layout writes "▁" after the added token, the
        // newer one does not; a leading space gives "▁▁" only in the legacy layout.
        var legacy = LlamaTokenizer.FromFolder(TokenizerFolder("legacy"));
        var metaspace = LlamaTokenizer.FromFolder(TokenizerFolder("metaspace"));
        Assert.Equal(["▁Hello", "▁", "<s>", "▁", "."], legacy.Tokenize("Hello <s>."));
        Assert.Equal(["▁Hello", "▁", "<s>", "."], metaspace.Tokenize("Hello <s>."));
        Assert.Equal(["▁▁", "le", "a", "d", "ing", "▁s", "pace"], legacy.Tokenize(" leading space"));
        Assert.Equal(["▁", "le", "a", "d", "ing", "▁s", "pace"], metaspace.Tokenize(" leading space"));
        int differing = Texts("legacy", "ids").Zip(Texts("metaspace", "ids")).Count(p => !p.First.Ids.SequenceEqual(p.Second.Ids));
        Assert.True(differing >= 8, $"only {differing} texts differ between the layouts");
    }

    [Theory]
    [InlineData("legacy", "ids_add_eos", true, true)]
    [InlineData("legacy", "ids_no_bos", false, false)]
    [InlineData("legacy", "ids_eos_only", false, true)]
    [InlineData("metaspace", "ids_add_eos", true, true)]
    [InlineData("metaspace", "ids_no_bos", false, false)]
    [InlineData("metaspace", "ids_eos_only", false, true)]
    public void AddBosAndEosTokenRebuildTheTemplateAsTransformersDoes(string layout, string variant, bool addBos, bool addEos)
    {
        // tokenizer_config.json's flags rule, the file's <s> $A left as it is (LlamaTokenizerFast.update_post_processor).
        var tokenizer = LlamaTokenizer.FromFolder(Edited(layout, config: c => { c["add_bos_token"] = addBos; c["add_eos_token"] = addEos; }));
        Assert.Equal(addBos, tokenizer.AddBosToken);
        Assert.Equal(addEos, tokenizer.AddEosToken);
        AssertIds(tokenizer, Texts(layout, variant));
    }

    [Theory]
    [InlineData("legacy", "ids_add_eos")]
    [InlineData("metaspace", "ids_eos_only")]
    public void WithoutTheConfigsFlagsTheFilesTemplateIsRead(string layout, string variant)
    {
        bool addBos = variant == "ids_add_eos";
        string folder = Edited(layout, json =>
        {
            var single = new JsonArray();
            if (addBos) single.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } });
            single.Add(new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } });
            single.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "</s>", ["type_id"] = 0 } });
            json["post_processor"]!["single"] = single;
            json["post_processor"]!["special_tokens"]!["</s>"] = new JsonObject
            {
                ["id"] = "</s>", ["ids"] = new JsonArray(2), ["tokens"] = new JsonArray("</s>"),
            };
        }, config: c => { c.Remove("add_bos_token"); c.Remove("add_eos_token"); });
        AssertIds(LlamaTokenizer.FromFolder(folder), Texts(layout, variant));

        // No post-processor at all: the text's ids alone.
        var bare = LlamaTokenizer.FromFolder(Edited(layout, json => json["post_processor"] = null,
            config: c => { c.Remove("add_bos_token"); c.Remove("add_eos_token"); }));
        AssertIds(bare, Texts(layout, "ids_no_bos"));
    }

    [Theory]
    [InlineData("legacy")]
    [InlineData("metaspace")]
    public void PaddedBatchesMatchTheLibrarysTruncationAndPadding(string layout)
    {
        var batches = Hf(layout)["batches"]!.AsArray();
        Assert.Equal(4, batches.Count);
        foreach (var b in batches)
        {
            string post = b!["post"]!.GetValue<string>();
            var tokenizer = LlamaTokenizer.FromFolder(Edited(layout, config: c => c["add_eos_token"] = post == "bos_eos"));
            var texts = b["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
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
            if (maxLength == 256) Assert.True(batch.WasTruncated); // the long text is cut at AuraFlow's 256, keeping </s> when added
        }
    }

    [Fact]
    public void PaddingSideDefaultsToTheConfigsThenLeft()
    {
        var tokenizer = LlamaTokenizer.FromFolder(TokenizerFolder("metaspace"));
        Assert.Equal(PaddingSide.Left, tokenizer.PaddingSide); // the fixture's tokenizer_config.json says "left"
        var left16 = Hf("metaspace")["batches"]!.AsArray().Single(b => b!["name"]!.GetValue<string>() == "left16")!;
        var texts = left16["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        var batch = tokenizer.EncodeBatch(texts, 16);
        for (int i = 0; i < texts.Count; i++) Assert.Equal(Ints(left16["input_ids"]![i]).Select(x => (long)x), batch.RowIds(i));
        Assert.Equal(PaddingSide.Right, LlamaTokenizer.FromFolder(Edited("metaspace", config: c => c["padding_side"] = "right")).PaddingSide);
        // LlamaTokenizerFast's class default is "left".
        Assert.Equal(PaddingSide.Left, LlamaTokenizer.FromFolder(Edited("metaspace", config: c => c.Remove("padding_side"))).PaddingSide);
    }

    [Fact]
    public void SpecialTokensAreLlamas()
    {
        var tokenizer = LlamaTokenizer.FromFolder(TokenizerFolder("legacy"));
        Assert.Equal(0, tokenizer.UnkTokenId);
        Assert.Equal(1, tokenizer.BosTokenId);
        Assert.Equal(2, tokenizer.EosTokenId);
        Assert.Equal(551, tokenizer.PadTokenId);
        Assert.Equal([1], tokenizer.PrefixIds);
        Assert.Empty(tokenizer.SuffixIds);
        Assert.Equal(int.MaxValue, tokenizer.ModelMaxLength); // 1e30 in the config: no limit
        Assert.Equal(555, tokenizer.VocabSize);
        Assert.Equal(3, tokenizer.TokenToId("<0x00>"));
        Assert.Equal(552, tokenizer.TokenToId("<extra_id_0>"));
        Assert.Equal("<sep>", tokenizer.IdToToken(554));

        // Truncation keeps <s>; the single-text layout pads on the right with <pad>.
        var encoded = tokenizer.Encode("a cat sitting on a wooden table", 4);
        Assert.Equal([1, .. tokenizer.Encode("a cat sitting on a wooden table", addSpecialTokens: false).Take(3)], encoded.Ids);
        Assert.True(encoded.WasTruncated);
        Assert.Equal([1, 551, 551], tokenizer.Encode("", 3).Ids);
    }

    [Fact]
    public void DecodeGivesTheTextBack()
    {
        var tokenizer = LlamaTokenizer.FromFolder(TokenizerFolder("metaspace"));
        foreach (string text in new[] { "A photo of a cat.", "two  spaces\tand\ttabs\n\nlines ", "Café Zürich 日本の猫 🐱👍🏽", "" })
        {
            // The Metaspace layout writes one "▁" before the text, which the decoder turns into a leading space.
            string expected = text.Length == 0 ? "" : " " + text;
            Assert.Equal(expected, tokenizer.Decode(tokenizer.Encode(text)));
        }
        Assert.Equal(" a fill", tokenizer.Decode(tokenizer.Encode("a<extra_id_0> fill</s>")));
    }

    [Fact]
    public void TheTokenizeCommandAndTheRegistryKnowLlama()
    {
        Assert.Equal(DiffusersSharp.Models.ComponentKind.Tokenizer, DiffusersSharp.Models.ModelRegistry.KindOf("tokenizer", "LlamaTokenizerFast"));
        Assert.Equal(DiffusersSharp.Models.ComponentKind.Tokenizer, DiffusersSharp.Models.ModelRegistry.KindOf("tokenizer", "LlamaTokenizer"));

        // A model folder whose tokenizer/ is the fixture's: the command pads to --max-sequence-length (AuraFlow's 256).
        string model = Path.Combine(_dir, "model");
        string tokenizerDir = Path.Combine(model, "tokenizer");
        Directory.CreateDirectory(tokenizerDir);
        foreach (string file in Directory.GetFiles(TokenizerFolder("metaspace"))) File.Copy(file, Path.Combine(tokenizerDir, Path.GetFileName(file)));
        var auraflow = Hf("metaspace")["batches"]!.AsArray().Single(b => b!["name"]!.GetValue<string>() == "auraflow256")!;
        string prompt = auraflow["texts"]![0]!.GetValue<string>();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, DiffusersSharp.Cli.CliApp.Run(["tokenize", "--model", model, "--prompt", prompt, "--max-sequence-length", "256"], stdout, stderr));
        var entry = System.Text.Json.JsonDocument.Parse(stdout.ToString()).RootElement.GetProperty("tokenizer");
        Assert.Equal("LlamaTokenizer", entry.GetProperty("class").GetString());
        Assert.Equal(Ints(auraflow["input_ids"]![0]), entry.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()));
    }

    [Fact]
    public void BadFoldersFilesAndCallsAreRefusedWithClearErrors()
    {
        Assert.Throws<DirectoryNotFoundException>(() => LlamaTokenizer.FromFolder(Path.Combine(_dir, "missing")));
        Assert.Contains("tokenizer.json", Assert.Throws<FileNotFoundException>(() => LlamaTokenizer.FromFolder(_dir)).Message);

        Assert.Throws<NotSupportedException>(() => LlamaTokenizer.FromFolder(Edited("metaspace", json =>
            json["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false })));
        Assert.Throws<NotSupportedException>(() => LlamaTokenizer.FromFolder(Edited("legacy", json =>
            json["normalizer"] = new JsonObject { ["type"] = "NFKC" })));
        Assert.Throws<NotSupportedException>(() => LlamaTokenizer.FromFolder(Edited("legacy", json => json["model"]!["type"] = "Unigram")));
        Assert.Throws<NotSupportedException>(() => LlamaTokenizer.FromFolder(Edited("legacy", json =>
            json["post_processor"] = new JsonObject { ["type"] = "ByteLevel" })));
        Assert.Throws<NotSupportedException>(() => LlamaTokenizer.FromFolder(Edited("legacy", config: c => c["add_prefix_space"] = true)));
        Assert.Throws<NotSupportedException>(() => LlamaTokenizer.FromFolder(Edited("legacy", config: c => c["split_special_tokens"] = true)));
        Assert.Contains("$A", Assert.Throws<InvalidDataException>(() => LlamaTokenizer.FromFolder(Edited("legacy",
            json => json["post_processor"]!["single"] = new JsonArray(),
            config: c => c.Remove("add_bos_token")))).Message);
        Assert.Contains("padding_side", Assert.Throws<InvalidDataException>(() =>
            LlamaTokenizer.FromFolder(Edited("legacy", config: c => c["padding_side"] = "middle"))).Message);
        Assert.Contains("bos_token", Assert.Throws<InvalidDataException>(() =>
            LlamaTokenizer.FromFolder(Edited("legacy", config: c => c["bos_token"] = "<nothing>"))).Message);

        var tokenizer = LlamaTokenizer.FromFolder(TokenizerFolder("legacy"));
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.EncodeBatch(["a cat"], 0));
        Assert.Throws<ArgumentException>(() => tokenizer.EncodeBatch(["a cat sitting on a wooden table"], 3, truncate: false));
        Assert.Throws<ArgumentException>(() => tokenizer.EncodeBatch([], 8));

        // No pad token named (Llama's own tokenizer): padding is refused, as transformers refuses it.
        string noPadFolder = Edited("legacy", config: c => c.Remove("pad_token"));
        var map = JsonNode.Parse(File.ReadAllText(Path.Combine(noPadFolder, "special_tokens_map.json")))!.AsObject();
        map.Remove("pad_token");
        File.WriteAllText(Path.Combine(noPadFolder, "special_tokens_map.json"), map.ToJsonString());
        var noPad = LlamaTokenizer.FromFolder(noPadFolder);
        Assert.Null(noPad.PadToken);
        Assert.Throws<InvalidOperationException>(() => noPad.EncodeBatch(["a cat"], 8));
        Assert.Throws<InvalidOperationException>(() => noPad.Encode("a cat", 8));
        Assert.Equal(noPad.Encode("a cat"), noPad.Encode("a cat", 8, padToMaxLength: false).Ids);
    }
}
