using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// The normaliser and pre-tokenizer of a SentencePiece tokenizer as the tokenizers library runs them, read from
/// tokenizer.json: normalisers Precompiled / Replace / Prepend / Sequence, pre-tokenizers WhitespaceSplit and Metaspace.
/// The default (no tokenizer.json) is what transformers builds for T5: Precompiled, then WhitespaceSplit +
/// Metaspace("▁", prepend always, split).
/// </summary>
internal sealed class MetaspacePipeline
{
    private enum Prepend { Always, First, Never }

    private readonly List<Func<string, string>> _normalizers = [];
    private bool _whitespaceSplit = true;
    private char _replacement = '\u2581';
    private Prepend _prepend = Prepend.Always;
    private bool _split = true;

    public static MetaspacePipeline Default(PrecompiledCharsMap? charsMap)
    {
        var p = new MetaspacePipeline();
        if (charsMap is not null) p._normalizers.Add(charsMap.NormalizeLikeTokenizers);
        return p;
    }

    /// <summary>
    /// Only the normaliser of a tokenizer.json, for tokenizers without a Metaspace pre-tokenizer (Gemma: Replace(" ", "▁")
    /// and no pre-tokenizer); <see cref="PreTokenize"/> is not meant to be called on it.
    /// </summary>
    public static MetaspacePipeline NormalizerOf(JsonElement root, string path)
    {
        var p = new MetaspacePipeline();
        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object) p.AddNormalizer(norm, path);
        return p;
    }

    /// <summary>
    /// A lone Metaspace pre-tokenizer (Llama's tokenizer.json as transformers writes it with legacy = false), with no
    /// normaliser and no whitespace split: only <see cref="PreTokenize"/> is meant to be called on it.
    /// </summary>
    /// <exception cref="InvalidDataException"><paramref name="pre"/> is not a Metaspace pre-tokenizer.</exception>
    public static MetaspacePipeline MetaspaceOnly(JsonElement pre, string path)
    {
        if (Type(pre) != "Metaspace") throw new InvalidDataException($"{path}: pre_tokenizer \"{Type(pre)}\" is not Metaspace.");
        var p = new MetaspacePipeline { _whitespaceSplit = false };
        p.ReadMetaspace(pre);
        return p;
    }

    public static MetaspacePipeline FromTokenizerJson(JsonElement root, string path)
    {
        var p = new MetaspacePipeline();
        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object) p.AddNormalizer(norm, path);
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
        {
            p._whitespaceSplit = false;
            var steps = Type(pre) == "Sequence" ? TokenizerFiles.Require(pre, "pretokenizers", JsonValueKind.Array, path).EnumerateArray().ToList() : [pre];
            bool metaspace = false;
            foreach (var step in steps)
            {
                switch (Type(step))
                {
                    case "WhitespaceSplit" when !metaspace: p._whitespaceSplit = true; break;
                    case "Metaspace" when !metaspace: p.ReadMetaspace(step); metaspace = true; break;
                    default: throw new InvalidDataException($"{path}: pre_tokenizer step \"{Type(step)}\" is not supported for a Unigram tokenizer (expected WhitespaceSplit, Metaspace).");
                }
            }
            if (!metaspace) throw new InvalidDataException($"{path}: the pre_tokenizer has no Metaspace step.");
        }
        return p;
    }

    private static string Type(JsonElement e) => e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";

    private void AddNormalizer(JsonElement n, string path)
    {
        switch (Type(n))
        {
            case "Sequence":
                foreach (var inner in TokenizerFiles.Require(n, "normalizers", JsonValueKind.Array, path).EnumerateArray()) AddNormalizer(inner, path);
                break;
            case "Precompiled":
                string blob = TokenizerFiles.Require(n, "precompiled_charsmap", JsonValueKind.String, path).GetString()!;
                byte[] bytes;
                try { bytes = Convert.FromBase64String(blob); }
                catch (FormatException e) { throw new InvalidDataException($"{path}: precompiled_charsmap is not base64.", e); }
                _normalizers.Add(new PrecompiledCharsMap(bytes, path).NormalizeLikeTokenizers);
                break;
            case "Prepend":
                // The library prepends to every non-empty stretch (Llama's legacy layout: "▁" before each text piece).
                string prefix = TokenizerFiles.Require(n, "prepend", JsonValueKind.String, path).GetString()!;
                _normalizers.Add(s => s.Length == 0 ? s : prefix + s);
                break;
            case "Replace":
                var pattern = TokenizerFiles.Require(n, "pattern", JsonValueKind.Object, path);
                string content = TokenizerFiles.Require(n, "content", JsonValueKind.String, path).GetString()!;
                if (pattern.TryGetProperty("String", out var str) && str.ValueKind == JsonValueKind.String)
                {
                    string from = str.GetString()!;
                    _normalizers.Add(s => from.Length == 0 ? s : s.Replace(from, content, StringComparison.Ordinal));
                }
                else if (pattern.TryGetProperty("Regex", out var re) && re.ValueKind == JsonValueKind.String)
                {
                    var regex = new Regex(re.GetString()!, RegexOptions.CultureInvariant);
                    _normalizers.Add(s => regex.Replace(s, content));
                }
                else throw new InvalidDataException($"{path}: Replace normalizer without a String or Regex pattern.");
                break;
            default:
                throw new InvalidDataException($"{path}: normalizer \"{Type(n)}\" is not supported by DiffusersSharp's SentencePiece-style tokenizers (expected Precompiled, Replace, Prepend, Sequence).");
        }
    }

    private void ReadMetaspace(JsonElement m)
    {
        if (m.TryGetProperty("replacement", out var r) && r.GetString() is { Length: 1 } rep) _replacement = rep[0];
        if (m.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind == JsonValueKind.String)
            _prepend = ps.GetString() switch { "first" => Prepend.First, "never" => Prepend.Never, _ => Prepend.Always };
        else if (m.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False)
            _prepend = Prepend.Never;
        if (m.TryGetProperty("split", out var sp) && sp.ValueKind == JsonValueKind.False) _split = false;
    }

    /// <summary>The normalisers in order, on a stretch of raw text between special tokens.</summary>
    public string Normalize(string text)
    {
        foreach (var f in _normalizers) text = f(text);
        return text;
    }

    /// <summary>The pieces the Unigram model segments, for a normalised stretch of text.</summary>
    /// <param name="normalized">The normalised text of the stretch.</param>
    /// <param name="atStart">Whether the stretch starts the whole input (for prepend scheme "first").</param>
    public List<string> PreTokenize(string normalized, bool atStart)
    {
        var words = new List<(string Word, bool AtStart)>();
        if (_whitespaceSplit)
        {
            var sb = new StringBuilder();
            bool first = atStart;
            foreach (Rune r in normalized.EnumerateRunes())
            {
                if (Rune.IsWhiteSpace(r))
                {
                    if (sb.Length > 0) words.Add((sb.ToString(), first));
                    sb.Clear();
                    first = false;
                    continue;
                }
                sb.Append(r.ToString());
            }
            if (sb.Length > 0) words.Add((sb.ToString(), first));
        }
        else if (normalized.Length > 0)
        {
            words.Add((normalized, atStart));
        }

        var result = new List<string>();
        foreach (var (word, wordAtStart) in words)
        {
            string w = word.Replace(' ', _replacement);
            bool prepend = _prepend == Prepend.Always || (_prepend == Prepend.First && wordAtStart);
            if (prepend && w[0] != _replacement) w = _replacement + w;
            if (!_split) { result.Add(w); continue; }
            int start = 0;
            for (int i = 1; i <= w.Length; i++)
            {
                if (i == w.Length || w[i] == _replacement)
                {
                    result.Add(w[start..i]);
                    start = i;
                }
            }
        }
        return result;
    }
}
