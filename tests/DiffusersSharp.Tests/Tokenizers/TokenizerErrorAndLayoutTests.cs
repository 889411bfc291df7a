using DiffusersSharp.Tokenizers;

namespace DiffusersSharp.Tests.Tokenizers;

/// <summary>Missing or corrupt files give exceptions naming the file; padding and truncation options behave as documented.</summary>
public sealed class TokenizerErrorAndLayoutTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-tok-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Copy(string from, params string[] files)
    {
        foreach (string f in files) File.Copy(Path.Combine(TokenizerFixture.Folder(from), f), Path.Combine(_dir, f));
        return _dir;
    }

    [Fact]
    public void MissingFolderIsDirectoryNotFound()
    {
        string missing = Path.Combine(_dir, "nope");
        Assert.Throws<DirectoryNotFoundException>(() => CLIPTokenizer.FromFolder(missing));
        Assert.Throws<DirectoryNotFoundException>(() => T5Tokenizer.FromFolder(missing));
    }

    [Fact]
    public void EmptyFolderIsFileNotFoundNamingTheExpectedFiles()
    {
        var clip = Assert.Throws<FileNotFoundException>(() => CLIPTokenizer.FromFolder(_dir));
        Assert.Contains("vocab.json", clip.Message);
        var t5 = Assert.Throws<FileNotFoundException>(() => T5Tokenizer.FromFolder(_dir));
        Assert.Contains("spiece.model", t5.Message);
    }

    [Fact]
    public void MissingMergesIsFileNotFound()
    {
        Copy("tokenizer", "vocab.json");
        var e = Assert.Throws<FileNotFoundException>(() => CLIPTokenizer.FromFolder(_dir));
        Assert.Contains("merges.txt", e.Message);
    }

    [Fact]
    public void CorruptVocabJsonIsInvalidDataNamingIt()
    {
        Copy("tokenizer", "merges.txt");
        File.WriteAllText(Path.Combine(_dir, "vocab.json"), "{\"a\": 0, ");
        var e = Assert.Throws<InvalidDataException>(() => CLIPTokenizer.FromFolder(_dir));
        Assert.Contains("vocab.json", e.Message);
    }

    [Fact]
    public void CorruptMergesIsInvalidDataNamingIt()
    {
        Copy("tokenizer", "vocab.json");
        File.WriteAllText(Path.Combine(_dir, "merges.txt"), "#version: 0.2\ni n\nthis line is wrong\n");
        var e = Assert.Throws<InvalidDataException>(() => CLIPTokenizer.FromFolder(_dir));
        Assert.Contains("merges.txt", e.Message);
    }

    [Fact]
    public void TruncatedSpieceModelIsInvalidDataNamingIt()
    {
        byte[] good = File.ReadAllBytes(Path.Combine(TokenizerFixture.Folder("tokenizer_3"), "spiece.model"));
        File.WriteAllBytes(Path.Combine(_dir, "spiece.model"), good[..(good.Length / 2)]);
        var e = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromFolder(_dir));
        Assert.Contains("spiece.model", e.Message);
    }

    [Fact]
    public void GarbageSpieceModelIsInvalidData()
    {
        File.WriteAllBytes(Path.Combine(_dir, "spiece.model"), "not a protobuf at all, just text\n"u8.ToArray());
        var e = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromFolder(_dir));
        Assert.Contains("spiece.model", e.Message);
    }

    [Fact]
    public void T5TokenizerJsonOfTheWrongModelTypeIsInvalidData()
    {
        Copy("tokenizer_2", "tokenizer.json");
        var e = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromFolder(_dir));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("Unigram", e.Message);
    }

    [Fact]
    public void CorruptTokenizerJsonIsInvalidData()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\"]]}}");
        var e = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromFolder(_dir));
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void UnsupportedT5PreTokenizerIsInvalidDataNamingIt()
    {
        string json = File.ReadAllText(Path.Combine(TokenizerFixture.Folder("tokenizer_3"), "tokenizer.json"));
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json.Replace("\"WhitespaceSplit\"", "\"BertPreTokenizer\""));
        var e = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromFolder(_dir));
        Assert.Contains("BertPreTokenizer", e.Message);
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void ClipUpperCaseSpecialLiteralIsTextNotTheSpecialToken()
    {
        // Written exactly, <|endoftext|> is the special token (fixture prompt 17); in capitals it is lower-cased text,
        // which the ByteLevel step splits as "<|", "endoftext", "|>".
        var (clip, _) = TokenizerFixture.Get("tokenizer");
        var ids = clip.Encode("a <|ENDOFTEXT|> b", 77, padToMaxLength: false).Ids;
        Assert.Equal(49407, ids[^1]);
        Assert.DoesNotContain(49407, ids[..^1]);
        Assert.Equal(clip.Encode("a <| endoftext |> b", 77, padToMaxLength: false).Ids, ids);
    }

    [Fact]
    public void ClipSpecialTokenMarkedNormalizedIsMatchedAfterLowerCasing()
    {
        // openai/clip-vit-large-patch14 writes its special tokens as AddedToken objects with "normalized": true; the
        // tokenizers library then looks for them in the normalised (lower-cased) text.
        Copy("tokenizer", "vocab.json", "merges.txt");
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """
            {"model_max_length": 77, "bos_token": {"content": "<|startoftext|>", "normalized": true},
             "eos_token": {"content": "<|endoftext|>", "normalized": true}, "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
            """);
        var ids = CLIPTokenizer.FromFolder(_dir).Encode("a <|ENDOFTEXT|> b", 77, padToMaxLength: false).Ids;
        var (clip, _) = TokenizerFixture.Get("tokenizer");
        Assert.Equal(clip.Encode("a <|endoftext|> b", 77, padToMaxLength: false).Ids, ids);
        Assert.Equal(49407, ids[2]);
    }

    [Fact]
    public void SentencePieceModeNeedsSpieceModel()
    {
        Copy("tokenizer_3", "tokenizer.json");
        Assert.Throws<FileNotFoundException>(() => T5Tokenizer.FromFolder(_dir, T5TokenizerMode.SentencePiece));
        Assert.Equal(1, T5Tokenizer.FromFolder(_dir).Encode("", 256).Ids[0]);
    }

    [Fact]
    public void ClipLoadsFromTokenizerJsonAlone()
    {
        Copy("tokenizer_2", "tokenizer.json", "tokenizer_config.json");
        var (ids, _) = TokenizerFixture.Expected("tokenizer_2", 9);
        Assert.Equal(ids, CLIPTokenizer.FromFolder(_dir).Encode(TokenizerFixture.Prompts[9], 77).Ids);
    }

    [Theory]
    [InlineData("tokenizer")]
    [InlineData("tokenizer_3")]
    public void NoPaddingAndNoTruncationKeepEveryId(string name)
    {
        var (tok, maxLength) = TokenizerFixture.Get(name);
        string prompt = TokenizerFixture.Prompts[15]; // 300 words: longer than both limits
        var full = tok.Encode(prompt, maxLength, padToMaxLength: false, truncate: false);
        Assert.Equal(full.UntruncatedLength, full.Ids.Length);
        Assert.False(full.WasTruncated);
        Assert.Equal(tok.EosTokenId, full.Ids[^1]);
        var cut = tok.Encode(prompt, maxLength);
        Assert.Equal(maxLength, cut.Ids.Length);
        Assert.Equal(tok.EosTokenId, cut.Ids[^1]);
        Assert.Equal(full.Ids[..(maxLength - 1)], cut.Ids[..(maxLength - 1)]);
        Assert.Equal(full.Ids[(maxLength - 1)..^1], cut.TruncatedIds);
        Assert.StartsWith("word word", tok.Decode(cut.TruncatedIds));

        var shortText = tok.Encode("a photo", maxLength, padToMaxLength: false);
        Assert.Equal(shortText.UntruncatedLength, shortText.Ids.Length);
        Assert.True(shortText.Ids.Length < 10);
    }

    [Fact]
    public void MaxLengthThatCannotHoldTheSpecialTokensIsRejected()
    {
        var (clip, _) = TokenizerFixture.Get("tokenizer");
        Assert.Throws<ArgumentOutOfRangeException>(() => clip.Encode("a", 1));
        Assert.Equal([49406, 49407], clip.Encode("a cat", 2).Ids);
    }

    [Fact]
    public void DecodeGivesTheTextBack()
    {
        // Word by word, as CLIP's </w> marks words: punctuation and digits come back spaced.
        Assert.Equal("a photo of a cat , 1 2 3", TokenizerFixture.Get("tokenizer").Tokenizer is var c ? c.Decode(c.Encode("A photo of a cat, 123", 77).Ids) : "");
        var (t5, _) = TokenizerFixture.Get("tokenizer_3");
        Assert.Equal("a photo of a cat", t5.Decode(t5.Encode("a photo of a cat", 256).Ids));
    }
}
