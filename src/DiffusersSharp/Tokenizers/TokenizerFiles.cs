using System.Text.Json;

namespace DiffusersSharp.Tokenizers;

/// <summary>Reading of the files transformers saves beside a tokenizer, with errors that name the file.</summary>
internal static class TokenizerFiles
{
    public static void RequireFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Tokenizer folder not found: {folder}");
    }

    public static JsonDocument ReadJson(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file not found: {path}", path);
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>The property <paramref name="name"/> of an object, or throws naming <paramref name="path"/>.</summary>
    public static JsonElement Require(JsonElement obj, string name, JsonValueKind kind, string path)
    {
        if (obj.ValueKind != JsonValueKind.Object || !obj.TryGetProperty(name, out var value) || value.ValueKind != kind)
            throw new InvalidDataException($"{path}: expected \"{name}\" ({kind}).");
        return value;
    }

    /// <summary>A special token given as a string or as an AddedToken object <c>{"content": ...}</c>.</summary>
    public static string? TokenContent(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => null,
    };

    /// <summary>An AddedToken object's flags (<c>normalized</c>, <c>lstrip</c>, <c>rstrip</c>, <c>special</c>: true when
    /// not given), for the token <paramref name="content"/> with <paramref name="id"/>.</summary>
    public static AddedToken ReadAddedToken(JsonElement obj, string content, int id)
    {
        bool Flag(string name) => obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;
        bool special = obj.ValueKind != JsonValueKind.Object || !obj.TryGetProperty("special", out var s) || s.ValueKind != JsonValueKind.False;
        return new AddedToken(content, id, Flag("normalized"), Flag("lstrip"), Flag("rstrip"), special);
    }

    /// <summary>A BPE vocabulary (vocab.json, or tokenizer.json's model.vocab): token -> non-negative id.</summary>
    public static Dictionary<string, int> ReadVocab(JsonElement obj, string path)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in obj.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw new InvalidDataException($"{path}: the id of \"{p.Name}\" is not a non-negative integer.");
            vocab[p.Name] = id;
        }
        if (vocab.Count == 0) throw new InvalidDataException($"{path}: the vocabulary is empty.");
        return vocab;
    }

    /// <summary>merges.txt: "a b" lines in rank order, after an optional "#version" line.</summary>
    public static List<string> ReadMergesFile(string path)
    {
        var merges = new List<string>();
        int lineNo = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNo++;
            if (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal)) continue;
            if (line.Length == 0) continue;
            if (line.Split(' ').Length != 2) throw new InvalidDataException($"{path}:{lineNo}: a merge must be two tokens separated by one space.");
            merges.Add(line);
        }
        return merges;
    }

    /// <summary>tokenizer.json's model.merges, as "a b" strings (older files) or ["a", "b"] pairs (tokenizers 0.20+).</summary>
    public static List<string> ReadJsonMerges(JsonElement array, string path)
    {
        var merges = new List<string>();
        foreach (var m in array.EnumerateArray())
        {
            merges.Add(m.ValueKind switch
            {
                JsonValueKind.String => m.GetString()!,
                JsonValueKind.Array when m.GetArrayLength() == 2 => m[0].GetString() + " " + m[1].GetString(),
                _ => throw new InvalidDataException($"{path}: malformed entry in model.merges."),
            });
        }
        return merges;
    }

    /// <summary>Added tokens of a tokenizer.json in file order.</summary>
    public static List<AddedToken> AddedTokens(JsonElement root, string path)
    {
        var list = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var added) || added.ValueKind != JsonValueKind.Array) return list;
        foreach (var t in added.EnumerateArray())
        {
            if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.Number
                || TokenContent(t) is not { Length: > 0 } content)
                throw new InvalidDataException($"{path}: malformed entry in \"added_tokens\".");
            list.Add(ReadAddedToken(t, content, id.GetInt32()));
        }
        return list;
    }
}

/// <summary>What tokenizer_config.json and special_tokens_map.json say (both optional).</summary>
internal sealed class TokenizerConfig
{
    public Dictionary<string, string> SpecialTokens { get; } = new(StringComparer.Ordinal);
    public List<string> AdditionalSpecialTokens { get; } = [];
    public List<AddedToken> AddedTokensDecoder { get; } = [];

    /// <summary>Flags of special tokens given as AddedToken objects (id -1: not known here).</summary>
    public Dictionary<string, AddedToken> SpecialTokenFlags { get; } = new(StringComparer.Ordinal);

    /// <summary>The special token <paramref name="content"/> with <paramref name="id"/>, with the flags the config gives it.</summary>
    public AddedToken Special(string content, int id) =>
        SpecialTokenFlags.TryGetValue(content, out var f) ? f with { Id = id } : new AddedToken(content, id);
    public int? ModelMaxLength { get; private set; }
    public bool? DoLowerCase { get; private set; }
    public int? ExtraIds { get; private set; }

    /// <summary>tokenizer_config.json's split_special_tokens (special tokens written in the text are then not matched).</summary>
    public bool SplitSpecialTokens { get; private set; }

    /// <summary>tokenizer_config.json's add_bos_token (Llama / Gemma fast tokenizers rebuild their post-processor from it).</summary>
    public bool? AddBosToken { get; private set; }

    /// <summary>tokenizer_config.json's add_eos_token.</summary>
    public bool? AddEosToken { get; private set; }

    /// <summary>tokenizer_config.json's add_prefix_space (null when absent or null), for which transformers' Llama fast tokenizer rebuilds from tokenizer.model.</summary>
    public bool? AddPrefixSpace { get; private set; }

    /// <summary>tokenizer_config.json's padding_side ("right" or "left"), as written.</summary>
    public string? PaddingSide { get; private set; }

    public string? Token(string name) => SpecialTokens.GetValueOrDefault(name);

    public static TokenizerConfig Read(string folder)
    {
        var config = new TokenizerConfig();
        string mapPath = Path.Combine(folder, "special_tokens_map.json");
        if (File.Exists(mapPath))
        {
            using var map = TokenizerFiles.ReadJson(mapPath);
            config.ReadSpecialTokens(map.RootElement, mapPath);
        }
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            using var doc = TokenizerFiles.ReadJson(configPath);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{configPath}: expected a JSON object.");
            config.ReadSpecialTokens(root, configPath);
            if (root.TryGetProperty("model_max_length", out var m) && m.ValueKind == JsonValueKind.Number)
            {
                // transformers writes 1e30 (VERY_LARGE_INTEGER) when there is no limit.
                double v = m.GetDouble();
                if (v >= 1 && v < int.MaxValue) config.ModelMaxLength = (int)v;
            }
            if (root.TryGetProperty("do_lower_case", out var lc) && lc.ValueKind is JsonValueKind.True or JsonValueKind.False)
                config.DoLowerCase = lc.GetBoolean();
            if (root.TryGetProperty("extra_ids", out var e) && e.ValueKind == JsonValueKind.Number) config.ExtraIds = e.GetInt32();
            config.SplitSpecialTokens = root.TryGetProperty("split_special_tokens", out var sst) && sst.ValueKind == JsonValueKind.True;
            if (root.TryGetProperty("add_bos_token", out var abt) && abt.ValueKind is JsonValueKind.True or JsonValueKind.False)
                config.AddBosToken = abt.GetBoolean();
            if (root.TryGetProperty("add_eos_token", out var aet) && aet.ValueKind is JsonValueKind.True or JsonValueKind.False)
                config.AddEosToken = aet.GetBoolean();
            if (root.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind is JsonValueKind.True or JsonValueKind.False)
                config.AddPrefixSpace = aps.GetBoolean();
            if (root.TryGetProperty("padding_side", out var ps) && ps.ValueKind == JsonValueKind.String) config.PaddingSide = ps.GetString();
            if (root.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in dec.EnumerateObject())
                {
                    if (!int.TryParse(p.Name, out int id) || TokenizerFiles.TokenContent(p.Value) is not { Length: > 0 } content)
                        throw new InvalidDataException($"{configPath}: malformed entry \"{p.Name}\" in \"added_tokens_decoder\".");
                    config.AddedTokensDecoder.Add(TokenizerFiles.ReadAddedToken(p.Value, content, id));
                }
            }
        }
        return config;
    }

    private void ReadSpecialTokens(JsonElement root, string path)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: expected a JSON object.");
        foreach (string name in new[] { "bos_token", "eos_token", "pad_token", "unk_token" })
        {
            if (root.TryGetProperty(name, out var v) && TokenizerFiles.TokenContent(v) is { Length: > 0 } content)
            {
                SpecialTokens[name] = content;
                if (v.ValueKind == JsonValueKind.Object) SpecialTokenFlags[content] = TokenizerFiles.ReadAddedToken(v, content, -1);
            }
        }
        foreach (string listName in new[] { "additional_special_tokens", "extra_special_tokens" })
        {
            if (!root.TryGetProperty(listName, out var list) || list.ValueKind != JsonValueKind.Array) continue;
            foreach (var t in list.EnumerateArray())
            {
                if (TokenizerFiles.TokenContent(t) is not { Length: > 0 } content || AdditionalSpecialTokens.Contains(content)) continue;
                AdditionalSpecialTokens.Add(content);
                if (t.ValueKind == JsonValueKind.Object) SpecialTokenFlags[content] = TokenizerFiles.ReadAddedToken(t, content, -1);
            }
        }
    }
}
