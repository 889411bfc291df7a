// Our own reference tool (DiffusersSharp): the token ids Hugging Face's tokenizers library (Rust, 1.4.1 of the
// Tokenizers.DotNet wrapper) gives for textual inversion prompts, for the fixture local-diffusers/textual-inversion.
// For every case of cases.json (written first by tools/reference/textual_inversion.py from diffusers' own code) it builds
// a CLIP tokenizer.json: tiny-sd3's tokenizer_2/tokenizer.json (the real CLIP vocabulary and merges, saved by
// transformers 5; the same as tiny-sd15's vocab.json / merges.txt) without its "!" pad token, plus the case's added tokens
// in id order as transformers 5's add_tokens(str) adds them (normalized, not special). The library assigns their ids on
// load; they must be the ids diffusers recorded. It then encodes each prompt and its diffusers conversion, and checks that
// the added tokens it matched are those of the stand-in tokenizer in textual_inversion.py (whose tokenize() diffusers'
// maybe_convert_prompt used). Writes hf_tokenizers.json. Run from the repository root:
//   dotnet run --project tools/reference/hf_tokenizers -c Release
// With the argument "qwen2" it runs Qwen2.cs instead (the fixture local-diffusers/qwen3); with "qwen2-texts IN OUT" it
// encodes IN's JSON list of texts with that tokenizer into OUT (the fixture local-diffusers/qwen2-5-vl); with
// "gemma TOKENIZER_DIR IN OUT" it runs Gemma.cs (the fixture local-diffusers/gemma-tokenizer); with "gemma-requests
// TOKENIZER_DIR IN OUT" Gemma.cs's RunRequests (the tokenizer calls of tools/reference/sana_prompt.py); with "llama
// FIXTURE_DIR IN OUT" Llama.cs (the fixture local-diffusers/llama-tokenizer).
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Tokenizers.DotNet;

if (args.Length > 0 && args[0] == "qwen2")
{
    Qwen2Ids.Run(); // Qwen2.cs: the ids of local-diffusers/qwen3's tokenizer
    return;
}
if (args.Length == 3 && args[0] == "qwen2-texts")
{
    Qwen2Ids.RunTexts(args[1], args[2]); // Qwen2.cs: the same tokenizer on a JSON list of texts (local-diffusers/qwen2-5-vl)
    return;
}

if (args.Length == 4 && args[0] == "gemma")
{
    GemmaIds.Run(args[1], args[2], args[3]); // Gemma.cs: a Gemma-format tokenizer.json on cases.json (local-diffusers/gemma-tokenizer)
    return;
}

if (args.Length == 4 && args[0] == "llama")
{
    LlamaIds.Run(args[1], args[2], args[3]); // Llama.cs: both Llama tokenizer.json layouts on cases.json (local-diffusers/llama-tokenizer)
    return;
}

if (args.Length == 4 && args[0] == "gemma-requests")
{
    GemmaIds.RunRequests(args[1], args[2], args[3]); // Gemma.cs: the tokenizer calls sana_prompt.py / lumina2_prompt.py / auraflow_prompt.py recorded
    return;
}

const string Fixtures = "tests/DiffusersSharp.Tests/Fixtures/";
const string Out = Fixtures + "local-diffusers/textual-inversion/";
var cases = JsonNode.Parse(File.ReadAllText(Out + "cases.json"))!.AsObject();
var baseJson = JsonNode.Parse(File.ReadAllText(Fixtures + "tiny-sd3/model/tokenizer_2/tokenizer.json"))!.AsObject();
var prompts = cases["prompts"]!.AsArray().Select(p => p!.GetValue<string>()).ToList();
var result = new JsonObject();
string scratch = Path.Combine(Path.GetTempPath(), "hf_tokenizers_" + Environment.ProcessId);
Directory.CreateDirectory(scratch);
int checkedPrompts = 0;
foreach (var c in cases["cases"]!.AsArray())
{
    string name = c!["name"]!.GetValue<string>();
    foreach (string pair in new[] { "", "_2" })
    {
        if (c["result" + pair] is not JsonObject r) continue;
        // diffusers' own renumbering after this unload gives two tokens one id (see the fixture README): no consistent tokenizer.
        if (name == "unload_middle") continue;
        var decoder = r["decoder"]!.AsObject().Select(kv => (Id: int.Parse(kv.Key, CultureInfo.InvariantCulture), Content: kv.Value!.GetValue<string>()))
            .OrderBy(t => t.Id).ToList();
        var json = (JsonObject)baseJson.DeepClone();
        var added = json["added_tokens"]!.AsArray();
        foreach (var t in added.Where(t => t!["content"]!.GetValue<string>() == "!").ToList()) added.Remove(t);
        foreach (var (id, content) in decoder)
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = true, ["special"] = false,
            });
        string path = Path.Combine(scratch, name + pair + ".json");
        File.WriteAllText(path, json.ToJsonString());
        using var tokenizer = new Tokenizer(path);
        var idToContent = added.ToDictionary(t => t!["id"]!.GetValue<int>(), t => t!["content"]!.GetValue<string>());
        bool normalizedToken(int id) => decoder.Any(d => d.Id == id);
        var ids = new JsonObject();
        var converted = r["converted"]!.AsObject();
        foreach (string prompt in prompts)
        {
            foreach (string text in new[] { prompt, converted[prompt]!.GetValue<string>() }.Distinct())
            {
                var encoded = tokenizer.Encode(text);
                if (encoded.Length < 2 || encoded[0] != 49406 || encoded[^1] != 49407)
                    throw new InvalidOperationException($"{name}: '{text}' was not encoded as BOS ... EOS.");
                var body = encoded[1..^1].Select(i => (int)i).ToArray();
                ids[text] = new JsonArray(body.Select(i => (JsonNode)i).ToArray());
                if (text != prompt) continue;
                // The added tokens the library matched, as tokenize() spells them: normalized ones as lower-cased text.
                var matched = body.Where(idToContent.ContainsKey)
                    .Select(i => normalizedToken(i) ? Normalize(idToContent[i]) : idToContent[i]).ToList();
                var standIn = r["added_matches"]![prompt]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
                if (!matched.SequenceEqual(standIn))
                    throw new InvalidOperationException($"{name}: '{prompt}': tokenizers matched [{string.Join(", ", matched)}], the stand-in [{string.Join(", ", standIn)}].");
                checkedPrompts++;
            }
        }
        // The ids the library gave the added tokens on load must be diffusers'.
        foreach (var (id, content) in decoder)
        {
            var got = tokenizer.Encode(content)[1..^1];
            if (got.Length != 1 || got[0] != id) throw new InvalidOperationException($"{name}: {content} has id {string.Join(",", got)} in tokenizers, {id} in diffusers.");
        }
        result[name + pair] = ids;
    }
}
Directory.Delete(scratch, recursive: true);
var output = new JsonObject
{
    ["tokenizers"] = "Tokenizers.DotNet 1.4.1 (" + new Tokenizer(Fixtures + "tiny-sd3/model/tokenizer_2/tokenizer.json").GetVersion() + ")",
    ["note"] = "ids without BOS / EOS, for each case's prompts and their diffusers conversions",
    ["cases"] = result,
};
File.WriteAllText(Out + "hf_tokenizers.json", output.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
Console.WriteLine($"{result.Count} tokenizers, {checkedPrompts} prompts: added tokens as the stand-in matched them");

static string Normalize(string text)
{
    // CLIP's normalizer: NFC, whitespace runs to one space, lower case (ASCII and simple cases are all the fixture has).
    var nfc = text.Normalize(NormalizationForm.FormC);
    return System.Text.RegularExpressions.Regex.Replace(nfc, @"\s+", " ").ToLowerInvariant();
}
