using System.Text.Json;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;

namespace DiffusersSharp.Tests.Tokenizers;

/// <summary>tiny-sd3/tokenizers.json (transformers' ids) and the tokenizers of tiny-sd3/model, loaded once.</summary>
internal static class TokenizerFixture
{
    private static readonly Lazy<JsonDocument> Doc = new(() => JsonDocument.Parse(File.ReadAllBytes(Fixtures.Path("tiny-sd3/tokenizers.json"))));
    private static readonly Lazy<CLIPTokenizer> ClipL = new(() => CLIPTokenizer.FromFolder(Folder("tokenizer")));
    private static readonly Lazy<CLIPTokenizer> ClipG = new(() => CLIPTokenizer.FromFolder(Folder("tokenizer_2")));
    private static readonly Lazy<T5Tokenizer> T5 = new(() => T5Tokenizer.FromFolder(Folder("tokenizer_3")));

    public static string Folder(string name) => Path.Combine(Fixtures.TinySd3Model, name);

    public static string[] Prompts => Doc.Value.RootElement.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();

    /// <summary>Expected ids and untruncated length (-1 where the fixture gives only ids, as for tokenizer_3_sentencepiece).</summary>
    public static (int[] Ids, int UntruncatedLength) Expected(string key, int index)
    {
        var e = Doc.Value.RootElement.GetProperty(key)[index];
        if (e.ValueKind == JsonValueKind.Array) return (e.EnumerateArray().Select(x => x.GetInt32()).ToArray(), -1);
        return (e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(), e.GetProperty("untruncated_len").GetInt32());
    }

    /// <summary>The tokenizer the pipeline uses for <paramref name="name"/>, and the length SD3 pads it to.</summary>
    public static (ITextTokenizer Tokenizer, int MaxLength) Get(string name) => name switch
    {
        "tokenizer" => (ClipL.Value, 77),
        "tokenizer_2" => (ClipG.Value, 77),
        "tokenizer_3" => (T5.Value, 256),
        _ => throw new ArgumentException(name),
    };

    public static TheoryData<string, int> AllCases()
    {
        var data = new TheoryData<string, int>();
        int n = Prompts.Length;
        foreach (string t in new[] { "tokenizer", "tokenizer_2", "tokenizer_3" })
        {
            for (int i = 0; i < n; i++) data.Add(t, i);
        }
        return data;
    }

    public static TheoryData<int> PromptIndices()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < Prompts.Length; i++) data.Add(i);
        return data;
    }
}
