// Our own reference tool (DiffusersSharp), mode "gemma TOKENIZER_DIR IN OUT": the token ids Hugging Face's tokenizers
// library (Rust, through Tokenizers.DotNet 1.4.1) gives with a Gemma-format tokenizer.json (the fixture
// local-diffusers/gemma-tokenizer, written first by tools/reference/gemma_tokenizer.py), for the cases of IN (its
// cases.json):
//   - "texts": each text encoded as the file is (the post-processor adds <bos>), and with three variants of the file:
//     ignore_merges true, byte_fallback false (unknown characters become <unk>, fused), byte_fallback and fuse_unk false,
//     two byte pieces removed (<unk> next to byte pieces), a Split(" ", MergedWithPrevious) pre-tokenizer (newer
//     GemmaConverter); and with a post-processor <bos> $A <eos> (what transformers builds for add_eos_token = true);
//   - "batches": each text with the library's own truncation (max_length, LongestFirst, Right) and padding (Fixed
//     max_length, the batch's direction, <pad> id 0) set in the file, as transformers sets them for
//     tokenizer(texts, padding="max_length", max_length=L, truncation=True). The wrapper returns ids only, so the
//     attention mask is written from the library's own unpadded length (the same file with truncation but no padding):
//     1 on those positions, 0 on the padding, as the library's Encoding pads its mask;
//   - "sana": diffusers' SanaPipeline._get_gemma_prompt_embeds: chi = "\n".join(complex_human_instruction),
//     n = len(encode(chi)) (bos included), L = n + max_sequence_length - 2, then the batch of chi + prompt right-padded
//     to L; and the prompts alone with L = max_sequence_length (no instruction).
// Writes OUT (JSON). Run from the repository root:
//   dotnet run --project tools/reference/hf_tokenizers -c Release -- gemma \
//     tests/DiffusersSharp.Tests/Fixtures/local-diffusers/gemma-tokenizer/tokenizer \
//     tests/DiffusersSharp.Tests/Fixtures/local-diffusers/gemma-tokenizer/cases.json \
//     tests/DiffusersSharp.Tests/Fixtures/local-diffusers/gemma-tokenizer/hf_tokenizers.json
using System.Text.Json;
using System.Text.Json.Nodes;
using Tokenizers.DotNet;

internal static class GemmaIds
{
    public static void Run(string tokenizerDir, string input, string output)
    {
        var cases = JsonNode.Parse(File.ReadAllText(input))!.AsObject();
        var baseJson = JsonNode.Parse(File.ReadAllText(Path.Combine(tokenizerDir, "tokenizer.json")))!.AsObject();
        string scratch = Path.Combine(Path.GetTempPath(), "hf_tokenizers_gemma_" + Environment.ProcessId);
        Directory.CreateDirectory(scratch);
        int bos = baseJson["model"]!["vocab"]!["<bos>"]!.GetValue<int>();
        int eos = baseJson["model"]!["vocab"]!["<eos>"]!.GetValue<int>();
        int pad = baseJson["model"]!["vocab"]!["<pad>"]!.GetValue<int>();

        Tokenizer Load(string name, Action<JsonObject> edit)
        {
            var json = (JsonObject)baseJson.DeepClone();
            edit(json);
            string path = Path.Combine(scratch, name + ".json");
            File.WriteAllText(path, json.ToJsonString());
            return new Tokenizer(path);
        }
        static JsonArray Ids(IEnumerable<uint> ids) => new(ids.Select(i => (JsonNode)(int)i).ToArray());

        var texts = cases["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        var variants = new (string Name, Action<JsonObject> Edit)[]
        {
            ("ids", _ => { }),
            ("ids_ignore_merges", j => j["model"]!["ignore_merges"] = true),
            ("ids_no_byte_fallback", j => j["model"]!["byte_fallback"] = false),
            ("ids_no_byte_fallback_no_fuse", j => { j["model"]!["byte_fallback"] = false; j["model"]!["fuse_unk"] = false; }),
            ("ids_partial_bytes", j =>
            {
                // <0xE6> and <0x31> gone: 本 (E6 9C AC) and 1 cannot fall back to bytes and become <unk>; the library
                // writes a pending <unk> only when the next known character comes, after any byte pieces in between.
                var vocab = j["model"]!["vocab"]!.AsObject();
                vocab.Remove("<0xE6>");
                vocab.Remove("<0x31>");
            }),
            ("ids_split_pre_tokenizer", j => j["pre_tokenizer"] = new JsonObject
            {
                // What transformers' newer GemmaConverter writes; no space is left after the normalizer.
                ["type"] = "Split", ["pattern"] = new JsonObject { ["String"] = " " }, ["behavior"] = "MergedWithPrevious",
                ["invert"] = false,
            }),
            ("ids_add_eos", j =>
            {
                var single = j["post_processor"]!["single"]!.AsArray();
                single.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<eos>", ["type_id"] = 0 } });
                j["post_processor"]!["special_tokens"]!["<eos>"] = new JsonObject
                {
                    ["id"] = "<eos>", ["ids"] = new JsonArray(eos), ["tokens"] = new JsonArray("<eos>"),
                };
            }),
        };
        var textResults = texts.Select(t => new JsonObject { ["text"] = t }).ToList();
        string version = "";
        foreach (var (name, edit) in variants)
        {
            using var tokenizer = Load(name, edit);
            version = tokenizer.GetVersion();
            for (int i = 0; i < texts.Count; i++) textResults[i][name] = Ids(tokenizer.Encode(texts[i]));
        }

        JsonObject Batch(string name, IReadOnlyList<string> batchTexts, int maxLength, string direction)
        {
            using var truncated = Load(name + "_trunc", j => j["truncation"] = Truncation(maxLength));
            using var padded = Load(name + "_pad", j =>
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
                if (row.Length != maxLength) throw new InvalidOperationException($"{name}: padded row has {row.Length} ids, not {maxLength}.");
                ids.Add(Ids(row));
                var mask = Enumerable.Range(0, maxLength).Select(k => direction == "Right" ? (k < real ? 1 : 0) : (k >= maxLength - real ? 1 : 0));
                masks.Add(new JsonArray(mask.Select(m => (JsonNode)m).ToArray()));
            }
            return new JsonObject
            {
                ["name"] = name, ["max_length"] = maxLength, ["direction"] = direction,
                ["texts"] = new JsonArray(batchTexts.Select(t => (JsonNode)t).ToArray()),
                ["input_ids"] = ids, ["attention_mask"] = masks,
            };
        }

        var batches = new JsonArray();
        foreach (var b in cases["batches"]!.AsArray())
        {
            batches.Add(Batch(b!["name"]!.GetValue<string>(), b["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList(),
                b["max_length"]!.GetValue<int>(), b["direction"]!.GetValue<string>()));
        }

        var sana = cases["sana"]!.AsObject();
        string chi = string.Join("\n", sana["complex_human_instruction"]!.AsArray().Select(t => t!.GetValue<string>()));
        int maxSequenceLength = sana["max_sequence_length"]!.GetValue<int>();
        int chiTokens;
        using (var plain = Load("sana_plain", _ => { })) chiTokens = plain.Encode(chi).Length;
        int maxLengthAll = chiTokens + maxSequenceLength - 2;
        var prompts = sana["prompts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        var sanaResult = new JsonObject
        {
            ["chi_prompt"] = chi,
            ["num_chi_prompt_tokens"] = chiTokens,
            ["max_length_all"] = maxLengthAll,
            ["with_instruction"] = Batch("sana_chi", prompts.Select(p => chi + p).ToList(), maxLengthAll, "Right"),
            ["without_instruction"] = Batch("sana_plain", sana["no_instruction_prompts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList(),
                maxSequenceLength, "Right"),
        };
        if (bos != 2 || eos != 1 || pad != 0) throw new InvalidOperationException("not Gemma's special ids");
        Directory.Delete(scratch, recursive: true);

        var result = new JsonObject
        {
            ["tokenizers"] = "Tokenizers.DotNet 1.4.1 (" + version + "), Rust tokenizers 0.22.2",
            ["note"] = "ids of tokenizer/tokenizer.json (and variants) for cases.json; see README.md",
            ["texts"] = new JsonArray(textResults.Select(r => (JsonNode)r).ToArray()),
            ["batches"] = batches,
            ["sana"] = sanaResult,
        };
        File.WriteAllText(output, result.ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }) + "\n");
        Console.WriteLine($"{texts.Count} texts x {variants.Length} variants, {batches.Count} batches, Sana: chi {chiTokens} tokens, L = {maxLengthAll}");
    }

    /// <summary>
    /// Mode "gemma-requests TOKENIZER_DIR IN OUT" (tools/reference/sana_prompt.py): IN is {"encode": [texts], "batches":
    /// [{"texts": [...], "max_length": L}]}, the calls diffusers made on its tokenizer stand-in; OUT gets each text's ids
    /// as the file encodes it (post-processor &lt;bos&gt; included: tokenizer.encode(text)) and each batch with the
    /// library's own truncation (L, LongestFirst, Right) and padding to L with &lt;pad&gt; (tokenizer(texts,
    /// padding="max_length", max_length=L, truncation=True)) on the batch's "direction" ("Right" when absent; "Left" for
    /// a tokenizer whose padding_side is left: tools/reference/auraflow_prompt.py's Llama one), the mask 1 on the unpadded
    /// length the same file gives with truncation only, as in "gemma" mode's batches. Nothing in it is Gemma's: &lt;pad&gt;
    /// is looked up in the model vocabulary or the added tokens.
    /// </summary>
    public static void RunRequests(string tokenizerDir, string input, string output)
    {
        var requests = JsonNode.Parse(File.ReadAllText(input))!.AsObject();
        var baseJson = JsonNode.Parse(File.ReadAllText(Path.Combine(tokenizerDir, "tokenizer.json")))!.AsObject();
        int pad = baseJson["model"]!["vocab"]!["<pad>"]?.GetValue<int>()
            ?? baseJson["added_tokens"]!.AsArray().Single(t => t!["content"]!.GetValue<string>() == "<pad>")!["id"]!.GetValue<int>();
        string scratch = Path.Combine(Path.GetTempPath(), "hf_tokenizers_gemma_requests_" + Environment.ProcessId);
        Directory.CreateDirectory(scratch);
        Tokenizer Load(string name, Action<JsonObject> edit)
        {
            var json = (JsonObject)baseJson.DeepClone();
            edit(json);
            string path = Path.Combine(scratch, name + ".json");
            File.WriteAllText(path, json.ToJsonString());
            return new Tokenizer(path);
        }
        static JsonArray Ids(IEnumerable<uint> ids) => new(ids.Select(i => (JsonNode)(int)i).ToArray());

        var encoded = new JsonArray();
        string version;
        using (var plain = Load("plain", _ => { }))
        {
            version = plain.GetVersion();
            foreach (var t in requests["encode"]!.AsArray())
            {
                string text = t!.GetValue<string>();
                encoded.Add(new JsonObject { ["text"] = text, ["ids"] = Ids(plain.Encode(text)) });
            }
        }
        var batches = new JsonArray();
        int index = 0;
        foreach (var b in requests["batches"]!.AsArray())
        {
            int maxLength = b!["max_length"]!.GetValue<int>();
            string direction = b["direction"]?.GetValue<string>() ?? "Right";
            var texts = b["texts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
            using var truncated = Load($"trunc{index}", j => j["truncation"] = Truncation(maxLength));
            using var padded = Load($"pad{index}", j =>
            {
                j["truncation"] = Truncation(maxLength);
                j["padding"] = new JsonObject
                {
                    ["strategy"] = new JsonObject { ["Fixed"] = maxLength }, ["direction"] = direction,
                    ["pad_to_multiple_of"] = null, ["pad_id"] = pad, ["pad_type_id"] = 0, ["pad_token"] = "<pad>",
                };
            });
            index++;
            var ids = new JsonArray();
            var masks = new JsonArray();
            foreach (string text in texts)
            {
                var row = padded.Encode(text);
                int real = truncated.Encode(text).Length;
                if (row.Length != maxLength) throw new InvalidOperationException($"padded row has {row.Length} ids, not {maxLength}.");
                ids.Add(Ids(row));
                masks.Add(new JsonArray(Enumerable.Range(0, maxLength)
                    .Select(k => (JsonNode)((direction == "Right" ? k < real : k >= maxLength - real) ? 1 : 0)).ToArray()));
            }
            var batch = new JsonObject
            {
                ["texts"] = new JsonArray(texts.Select(t => (JsonNode)t).ToArray()), ["max_length"] = maxLength,
                ["input_ids"] = ids, ["attention_mask"] = masks,
            };
            if (b["direction"] is not null) batch["direction"] = direction;
            batches.Add(batch);
        }
        Directory.Delete(scratch, recursive: true);
        var result = new JsonObject
        {
            ["tokenizers"] = "Tokenizers.DotNet 1.4.1 (" + version + "), Rust tokenizers 0.22.2",
            ["encode"] = encoded,
            ["batches"] = batches,
        };
        File.WriteAllText(output, result.ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }) + "\n");
        Console.WriteLine($"{encoded.Count} texts encoded, {batches.Count} batches");
    }

    private static JsonObject Truncation(int maxLength) => new()
    {
        ["direction"] = "Right", ["max_length"] = maxLength, ["strategy"] = "LongestFirst", ["stride"] = 0,
    };
}
