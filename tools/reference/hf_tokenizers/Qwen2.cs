// Our own reference tool (DiffusersSharp), mode "qwen2": the token ids Hugging Face's tokenizers library (Rust, through
// Tokenizers.DotNet 1.4.1) gives with the small Qwen2-format tokenizer.json of the fixture local-diffusers/qwen3, written
// first by tools/reference/qwen2_tokenizer.py: every test string of its cases.json and every chat-template rendering
// there (the strings diffusers' Z-Image _encode_prompt tokenizes). No special tokens are added: Qwen2's post-processor
// (ByteLevel) adds none. Writes hf_tokenizers.json beside cases.json. Run from the repository root:
//   dotnet run --project tools/reference/hf_tokenizers -c Release -- qwen2
using System.Text.Json;
using System.Text.Json.Nodes;
using Tokenizers.DotNet;

internal static class Qwen2Ids
{
    public static void Run()
    {
        const string Dir = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/qwen3/";
        var cases = JsonNode.Parse(File.ReadAllText(Dir + "cases.json"))!.AsObject();
        var texts = cases["strings"]!.AsArray().Select(s => s!.GetValue<string>()).ToList();
        foreach (string key in new[] { "chat_template", "chat_template_no_thinking" })
            texts.AddRange(cases[key]!.AsObject().Select(kv => kv.Value!.GetValue<string>()));
        using var tokenizer = new Tokenizer(Dir + "tokenizer/tokenizer.json");
        var ids = new JsonArray();
        foreach (string text in texts.Distinct())
        {
            var encoded = tokenizer.Encode(text);
            ids.Add(new JsonObject
            {
                ["text"] = text,
                ["ids"] = new JsonArray(encoded.Select(i => (JsonNode)(int)i).ToArray()),
            });
        }
        var output = new JsonObject
        {
            ["tokenizers"] = "Tokenizers.DotNet 1.4.1 (" + tokenizer.GetVersion() + ")",
            ["note"] = "ids of tokenizer/tokenizer.json for each text (no special tokens added)",
            ["ids"] = ids,
        };
        File.WriteAllText(Dir + "hf_tokenizers.json", output.ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }) + "\n");
        Console.WriteLine($"{ids.Count} texts encoded");
    }

    /// <summary>The ids of local-diffusers/qwen3's tokenizer.json for each text of the JSON list in <paramref name="input"/>.</summary>
    public static void RunTexts(string input, string output)
    {
        var texts = JsonNode.Parse(File.ReadAllText(input))!.AsArray().Select(s => s!.GetValue<string>()).ToList();
        using var tokenizer = new Tokenizer("tests/DiffusersSharp.Tests/Fixtures/local-diffusers/qwen3/tokenizer/tokenizer.json");
        var ids = new JsonArray();
        foreach (string text in texts)
            ids.Add(new JsonObject
            {
                ["text"] = text,
                ["ids"] = new JsonArray(tokenizer.Encode(text).Select(i => (JsonNode)(int)i).ToArray()),
            });
        var result = new JsonObject
        {
            ["tokenizers"] = "Tokenizers.DotNet 1.4.1 (" + tokenizer.GetVersion() + ")",
            ["note"] = "ids of local-diffusers/qwen3/tokenizer/tokenizer.json for each text (no special tokens added)",
            ["ids"] = ids,
        };
        File.WriteAllText(output, result.ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }) + "\n");
    }
}
