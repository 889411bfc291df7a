using DiffusersSharp.Tokenizers;

namespace DiffusersSharp.Tests.Tokenizers;

/// <summary>Every fixture prompt through each SD3 tokenizer gives exactly transformers' ids.</summary>
public class TokenizerParityTests
{
    public static TheoryData<string, int> Cases => TokenizerFixture.AllCases();
    public static TheoryData<int> Prompts => TokenizerFixture.PromptIndices();

    [Fact]
    public void FixtureHasEveryPromptForEveryTokenizer()
    {
        int n = TokenizerFixture.Prompts.Length;
        Assert.True(n >= 21);
        foreach (string key in new[] { "tokenizer", "tokenizer_2", "tokenizer_3", "tokenizer_3_sentencepiece" })
            Assert.Equal(key.StartsWith("tokenizer_3") ? 256 : 77, TokenizerFixture.Expected(key, n - 1).Ids.Length);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void IdsEqualTransformers(string tokenizer, int index)
    {
        var (tok, maxLength) = TokenizerFixture.Get(tokenizer);
        var (ids, untruncated) = TokenizerFixture.Expected(tokenizer, index);
        var result = tok.Encode(TokenizerFixture.Prompts[index], maxLength);
        Assert.Equal(ids, result.Ids);
        Assert.Equal(untruncated, result.UntruncatedLength);
        Assert.Equal(untruncated > maxLength, result.WasTruncated);
        Assert.Equal(Math.Max(0, untruncated - maxLength), result.TruncatedIds.Length);
    }

    [Theory]
    [MemberData(nameof(Prompts))]
    public void ClipVocabMergesAndTokenizerJsonGiveTheSameIds(int index)
    {
        string folder = TokenizerFixture.Folder("tokenizer_2");
        var fromVocab = CLIPTokenizer.Load(folder, preferTokenizerJson: false);
        var fromJson = CLIPTokenizer.Load(folder, preferTokenizerJson: true);
        string prompt = TokenizerFixture.Prompts[index];
        var expected = TokenizerFixture.Expected("tokenizer_2", index).Ids;
        Assert.Equal(expected, fromVocab.Encode(prompt, 77).Ids);
        Assert.Equal(expected, fromJson.Encode(prompt, 77).Ids);
    }

    [Theory]
    [MemberData(nameof(Prompts))]
    public void T5SpieceModelAndTokenizerJsonGiveTheSameIds(int index)
    {
        string folder = TokenizerFixture.Folder("tokenizer_3");
        var fromSpm = T5Tokenizer.Load(folder, T5TokenizerMode.Transformers, preferSentencePieceModel: true);
        var fromJson = T5Tokenizer.Load(folder, T5TokenizerMode.Transformers, preferSentencePieceModel: false);
        string prompt = TokenizerFixture.Prompts[index];
        var expected = TokenizerFixture.Expected("tokenizer_3", index).Ids;
        Assert.Equal(expected, fromSpm.Encode(prompt, 256).Ids);
        Assert.Equal(expected, fromJson.Encode(prompt, 256).Ids);
    }

    [Theory]
    [MemberData(nameof(Prompts))]
    public void T5SentencePieceModeEqualsPlainSentencePiece(int index)
    {
        var tok = T5Tokenizer.FromFolder(TokenizerFixture.Folder("tokenizer_3"), T5TokenizerMode.SentencePiece);
        var (ids, _) = TokenizerFixture.Expected("tokenizer_3_sentencepiece", index);
        Assert.Equal(ids, tok.Encode(TokenizerFixture.Prompts[index], 256).Ids);
    }

    [Fact]
    public void PropertiesFollowTheConfigs()
    {
        var (l, _) = TokenizerFixture.Get("tokenizer");
        var (g, _) = TokenizerFixture.Get("tokenizer_2");
        var (t5, _) = TokenizerFixture.Get("tokenizer_3");
        Assert.Equal((77, 49407, 49407, 49408), (l.ModelMaxLength, l.PadTokenId, l.EosTokenId, l.VocabSize));
        Assert.Equal((77, 0, 49407, 49408), (g.ModelMaxLength, g.PadTokenId, g.EosTokenId, g.VocabSize));
        Assert.Equal((512, 0, 1, 4100), (t5.ModelMaxLength, t5.PadTokenId, t5.EosTokenId, t5.VocabSize));
        Assert.Equal(49406, ((CLIPTokenizer)l).BosTokenId);
    }
}
