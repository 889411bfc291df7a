// Our own reference tool (DiffusersSharp), mode "llama FIXTURE_DIR IN OUT": the token ids Hugging Face's tokenizers
// library (Rust, through Tokenizers.DotNet 1.4.1) gives with the two Llama-format tokenizer.json layouts of the fixture
// local-diffusers/llama-tokenizer (written first by tools/reference/llama_tokenizer.py): FIXTURE_DIR/tokenizer-legacy
// (normalizer Prepend("▁") + Replace(" " -> "▁"), no pre-tokenizer) and FIXTURE_DIR/tokenizer-metaspace (no normalizer,
// pre-tokenizer Metaspace("▁", prepend_scheme "first", split false)), for the cases of IN (its cases.json):
//   - "texts": each text encoded by each layout with its file as it is (post-processor <s> $A) and with the
//     post-processor edited as transformers' LlamaTokenizerFast.update_post_processor writes it for the other
//     add_bos_token / add_eos_token settings: <s> $A </s> (ids_add_eos), $A (ids_no_bos), $A </s> (ids_eos_only);
//   - "batches": each text with the library's own truncation (max_length, LongestFirst, Right) and padding (Fixed
//     max_length, the batch's direction, <pad>) set in the file, the post-processor the batch names: what transformers
//     sets for tokenizer(texts, padding="max_length", max_length=L, truncation=True), as AuraFlowPipeline calls it
//     (L = 256, right). The attention mask is written from the library's unpadded length (the same file with
//     truncation only), 1 there and 0 on the padding, as in "gemma" mode.
// Writes OUT (JSON). Run from the repository root:
//   dotnet run --project tools/reference/hf_tokenizers -c Release -- llama \
//     tests/DiffusersSharp.Tests/Fixtures/local-diffusers/llama-tokenizer \
//     tests/DiffusersSharp.Tests/Fixtures/local-diffusers/llama-tokenizer/cases.json \
//     tests/DiffusersSharp.Tests/Fixtures/local-diffusers/llama-tokenizer/hf_tokenizers.json
using System.Text.Json;
using System.Text.Json.Nodes;
using Tokenizers.DotNet;

internal static class LlamaIds
{
    private static readonly string[] Layouts = ["legacy", "metaspace"];

    public static void Run(string fixtureDir, string input, string output)
    {
        var cases = JsonNode.Parse(File.ReadAllText(input))!.AsObject();
        string scratch = Path.Combine(Path.GetTempPath(), "hf_tokenizers_llama_" + Environment.ProcessId);
        Directory.CreateDirectory(scratch);
        static JsonArray Ids(IEnumerable<uint> ids) => new(ids.Select(i => (JsonNode)(int)i).ToArray());
        var texts = cases["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        var posts = new (string Name, string Post)[] { ("ids", "bos"), ("ids_add_eos", "bos_eos"), ("ids_no_bos", "none"), ("ids_eos_only", "eos") };
        var result = new JsonObject();
        string version = "";
        foreach (string layout in Layouts)
        {
            var baseJson = JsonNode.Parse(File.ReadAllText(Path.Combine(fixtureDir, "tokenizer-" + layout, "tokenizer.json")))!.AsObject();
            var vocab = baseJson["model"]!["vocab"]!.AsObject();
            int bos = vocab["<s>"]!.GetValue<int>(), eos = vocab["</s>"]!.GetValue<int>();
            int pad = baseJson["added_tokens"]!.AsArray().Single(t => t!["content"]!.GetValue<string>() == "<pad>")!["id"]!.GetValue<int>();
            Tokenizer Load(string name, string post, Action<JsonObject> edit)
            {
                var json = (JsonObject)baseJson.DeepClone();
                json["post_processor"] = PostProcessor(post, bos, eos);
                edit(json);
                string path = Path.Combine(scratch, layout + "_" + name + ".json");
                File.WriteAllText(path, json.ToJsonString());
                return new Tokenizer(path);
            }
            // The file as written must be the "bos" template, or "ids" would not be the file as it is.
            if (!JsonNode.DeepEquals(baseJson["post_processor"], PostProcessor("bos", bos, eos)))
                throw new InvalidOperationException($"{layout}: the file's post_processor is not <s> $A.");

            var textResults = texts.Select(t => new JsonObject { ["text"] = t }).ToList();
            foreach (var (name, post) in posts)
            {
                using var tokenizer = Load(name, post, _ => { });
                version = tokenizer.GetVersion();
                for (int i = 0; i < texts.Count; i++) textResults[i][name] = Ids(tokenizer.Encode(texts[i]));
            }

            var batches = new JsonArray();
            foreach (var b in cases["batches"]!.AsArray())
            {
                string name = b!["name"]!.GetValue<string>(), post = b["post"]!.GetValue<string>(), direction = b["direction"]!.GetValue<string>();
                int maxLength = b["max_length"]!.GetValue<int>();
                var batchTexts = b["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
                using var truncated = Load(name + "_trunc", post, j => j["truncation"] = Truncation(maxLength));
                using var padded = Load(name + "_pad", post, j =>
                {
                    j["truncation"] = Truncation(maxLength);
                    j["padding"] = new JsonObject
                    {
                        ["strategy"] = new JsonObject { ["Fixed"] = maxLength }, ["direction"] = direction,
                        ["pad_to_multiple_of"] = null, ["pad_id"] = pad, ["pad_type_id"] = 0, ["pad_token"] = "<pad>",
                    };
                });
                var ids = new JsonArray();
                var masks = new JsonArray();
                foreach (string text in batchTexts)
                {
                    var row = padded.Encode(text);
                    int real = truncated.Encode(text).Length;
                    if (row.Length != maxLength) throw new InvalidOperationException($"{layout} {name}: padded row has {row.Length} ids, not {maxLength}.");
                    ids.Add(Ids(row));
                    var mask = Enumerable.Range(0, maxLength).Select(k => direction == "Right" ? (k < real ? 1 : 0) : (k >= maxLength - real ? 1 : 0));
                    masks.Add(new JsonArray(mask.Select(m => (JsonNode)m).ToArray()));
                }
                batches.Add(new JsonObject
                {
                    ["name"] = name, ["max_length"] = maxLength, ["direction"] = direction, ["post"] = post,
                    ["texts"] = new JsonArray(batchTexts.Select(t => (JsonNode)t).ToArray()),
                    ["input_ids"] = ids, ["attention_mask"] = masks,
                });
            }
            result[layout] = new JsonObject
            {
                ["texts"] = new JsonArray(textResults.Select(r => (JsonNode)r).ToArray()),
                ["batches"] = batches,
            };
        }
        Directory.Delete(scratch, recursive: true);
        var doc = new JsonObject
        {
            ["tokenizers"] = "Tokenizers.DotNet 1.4.1 (" + version + "), Rust tokenizers 0.22.2",
            ["note"] = "ids of tokenizer-legacy/ and tokenizer-metaspace/ (and post-processor variants) for cases.json; see README.md",
        };
        foreach (var (k, v) in result.ToList()) { result.Remove(k); doc[k] = v; }
        File.WriteAllText(output, doc.ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }) + "\n");
        Console.WriteLine($"{texts.Count} texts x {posts.Length} post-processors x {Layouts.Length} layouts, {cases["batches"]!.AsArray().Count} batches each");
    }

    /// <summary>TemplateProcessing as transformers' LlamaTokenizerFast.update_post_processor builds it.</summary>
    private static JsonObject PostProcessor(string post, int bos, int eos)
    {
        bool addBos = post is "bos" or "bos_eos", addEos = post is "bos_eos" or "eos";
        JsonArray Template(bool pair)
        {
            var t = new JsonArray();
            foreach (var (seq, type) in pair ? new[] { ("A", 0), ("B", 1) } : [("A", 0)])
            {
                if (addBos) t.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = type } });
                t.Add(new JsonObject { ["Sequence"] = new JsonObject { ["id"] = seq, ["type_id"] = type } });
                if (addEos) t.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "</s>", ["type_id"] = type } });
            }
            return t;
        }
        var special = new JsonObject();
        if (addBos) special["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(bos), ["tokens"] = new JsonArray("<s>") };
        if (addEos) special["</s>"] = new JsonObject { ["id"] = "</s>", ["ids"] = new JsonArray(eos), ["tokens"] = new JsonArray("</s>") };
        return new JsonObject { ["type"] = "TemplateProcessing", ["single"] = Template(false), ["pair"] = Template(true), ["special_tokens"] = special };
    }

    private static JsonObject Truncation(int maxLength) => new()
    {
        ["direction"] = "Right", ["max_length"] = maxLength, ["strategy"] = "LongestFirst", ["stride"] = 0,
    };
}
