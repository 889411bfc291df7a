using System.Text.Json;
using DiffusersSharp.Cli;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Tokenizers;

/// <summary><c>diffusers tokenize</c> on the tiny model prints transformers' ids and warns on truncation.</summary>
public class TokenizeCommandTests
{
    private static (int Code, JsonDocument? Json, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliApp.Run(["tokenize", .. args], stdout, stderr);
        string text = stdout.ToString();
        return (code, text.Length > 0 ? JsonDocument.Parse(text) : null, stderr.ToString());
    }

    private static int[] Ids(JsonDocument json, string name) =>
        json.RootElement.GetProperty(name).GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();

    [Theory]
    [InlineData(0)]
    [InlineData(20)]
    public void PrintsTheFixtureIdsForEveryTokenizer(int index)
    {
        var (code, json, err) = Run("--model", Fixtures.TinySd3Model, "--prompt", TokenizerFixture.Prompts[index]);
        Assert.Equal(0, code);
        Assert.Equal("", err);
        foreach (string name in new[] { "tokenizer", "tokenizer_2", "tokenizer_3" })
        {
            var (ids, untruncated) = TokenizerFixture.Expected(name, index);
            Assert.Equal(ids, Ids(json!, name));
            Assert.Equal(untruncated, json!.RootElement.GetProperty(name).GetProperty("untruncated_length").GetInt32());
            Assert.False(json.RootElement.GetProperty(name).GetProperty("truncated").GetBoolean());
        }
        Assert.Equal("T5Tokenizer", json!.RootElement.GetProperty("tokenizer_3").GetProperty("class").GetString());
    }

    [Fact]
    public void LongPromptIsFlaggedAndWarnedAboutOnOneLine()
    {
        var (code, json, err) = Run("--model", Fixtures.TinySd3Model, "--prompt", TokenizerFixture.Prompts[15]);
        Assert.Equal(0, code);
        foreach (string name in new[] { "tokenizer", "tokenizer_2", "tokenizer_3" })
        {
            Assert.True(json!.RootElement.GetProperty(name).GetProperty("truncated").GetBoolean());
            Assert.Equal(TokenizerFixture.Expected(name, 15).Ids, Ids(json, name));
        }
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("warning:", err);
        Assert.Contains("tokenizer kept 77 of 302 tokens", err);
        Assert.Contains("tokenizer_3 kept 256 of 301 tokens", err);
    }

    [Fact]
    public void MaxSequenceLengthSetsTheT5Length()
    {
        var (code, json, _) = Run("--model", Fixtures.TinySd3Model, "--prompt", "a cat", "--max-sequence-length", "16");
        Assert.Equal(0, code);
        Assert.Equal(16, Ids(json!, "tokenizer_3").Length);
        Assert.Equal(77, Ids(json!, "tokenizer").Length);
    }

    [Fact]
    public void BadInputExitsWithCode2()
    {
        Assert.Equal(2, Run("--model", Path.Combine(Fixtures.Root, "no-such-model"), "--prompt", "x").Code);
        Assert.Equal(2, Run("--model", Fixtures.TinySd3Model).Code);
        Assert.Equal(2, Run("--model", Fixtures.TinySd3Model, "--prompt", "x", "--max-sequence-length", "513").Code);
    }

    [Fact]
    public void AQwen2TokenizerTakesThePromptInQwen3sChatTemplate()
    {
        // A model folder whose tokenizer/ is fixture qwen3's Qwen2 tokenizer (Z-Image's kind): the ids are Hugging Face
        // tokenizers' for the chat-templated prompt (its hf_tokenizers.json), padded with <|endoftext|> to the length.
        string dir = Directory.CreateTempSubdirectory("tokenize-qwen").FullName;
        try
        {
            string source = Fixtures.Path("local-diffusers/qwen3/tokenizer");
            Directory.CreateDirectory(Path.Combine(dir, "tokenizer"));
            foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(dir, "tokenizer", Path.GetFileName(file)));
            var hf = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/qwen3/hf_tokenizers.json")));
            const string Templated = "<|im_start|>user\nA photo of a cat<|im_end|>\n<|im_start|>assistant\n";
            int[] expected = hf.RootElement.GetProperty("ids").EnumerateArray().Single(e => e.GetProperty("text").GetString() == Templated)
                .GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();

            var (code, json, err) = Run("--model", dir, "--prompt", "A photo of a cat", "--max-sequence-length", "24");
            Assert.True(code == 0, err);
            var entry = json!.RootElement.GetProperty("tokenizer");
            Assert.Equal("Qwen2Tokenizer", entry.GetProperty("class").GetString());
            Assert.Equal(expected.Length, entry.GetProperty("untruncated_length").GetInt32());
            int[] ids = Ids(json, "tokenizer");
            Assert.Equal(24, ids.Length);
            Assert.Equal(expected, ids[..expected.Length]);
            int pad = JsonDocument.Parse(File.ReadAllText(Path.Combine(source, "tokenizer.json"))).RootElement.GetProperty("added_tokens")
                .EnumerateArray().Single(t => t.GetProperty("content").GetString() == "<|endoftext|>").GetProperty("id").GetInt32();
            Assert.All(ids[expected.Length..], id => Assert.Equal(pad, id));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
