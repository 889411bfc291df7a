using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// SentencePiece's precompiled normalisation map (e.g. nmt_nfkc): a Darts-clone double-array trie over UTF-8 keys whose
/// values are offsets of NUL-terminated replacements. Blob layout: uint32 trie size in bytes, the trie units, the strings.
/// </summary>
internal sealed class PrecompiledCharsMap
{
    private readonly uint[] _units;
    private readonly byte[] _normalized;

    public PrecompiledCharsMap(byte[] blob, string source)
    {
        if (blob.Length < 4) throw new InvalidDataException($"{source}: precompiled_charsmap is too short.");
        uint trieSize = BinaryPrimitives.ReadUInt32LittleEndian(blob);
        if (trieSize % 4 != 0 || trieSize == 0 || 4L + trieSize > blob.Length)
            throw new InvalidDataException($"{source}: precompiled_charsmap has a bad trie size ({trieSize}).");
        _units = new uint[trieSize / 4];
        for (int i = 0; i < _units.Length; i++) _units[i] = BinaryPrimitives.ReadUInt32LittleEndian(blob.AsSpan(4 + 4 * i));
        _normalized = blob.AsSpan(4 + (int)trieSize).ToArray();
    }

    private static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);
    private static uint Label(uint unit) => unit & ((1u << 31) | 0xFF);
    private static bool HasLeaf(uint unit) => ((unit >> 8) & 1) == 1;
    private static int Value(uint unit) => (int)(unit & ((1u << 31) - 1));

    /// <summary>Each key that is a prefix of <paramref name="key"/>, shortest first, as (length in bytes, value).</summary>
    private IEnumerable<(int Length, int Value)> PrefixMatches(byte[] key, int start)
    {
        long node = Offset(_units[0]);
        for (int i = start; i < key.Length; i++)
        {
            byte c = key[i];
            if (c == 0) yield break;
            node ^= c;
            if (node >= _units.Length) yield break;
            uint unit = _units[node];
            if (Label(unit) != c) yield break;
            node ^= Offset(unit);
            if (HasLeaf(unit))
            {
                if (node >= _units.Length) yield break;
                yield return (i - start + 1, Value(_units[node]));
            }
        }
    }

    private string Replacement(int value)
    {
        if (value < 0 || value >= _normalized.Length) return "";
        int end = Array.IndexOf(_normalized, (byte)0, value);
        if (end < 0) end = _normalized.Length;
        return Encoding.UTF8.GetString(_normalized, value, end - value);
    }

    /// <summary>
    /// The tokenizers library's <c>Precompiled</c> normaliser (what transformers' T5TokenizerFast runs): per grapheme
    /// cluster, a cluster under 6 UTF-8 bytes is replaced by the value of its SHORTEST matching prefix when there is one,
    /// otherwise each character is replaced the same way or kept.
    /// </summary>
    public string NormalizeLikeTokenizers(string text)
    {
        var sb = new StringBuilder(text.Length);
        int i = 0;
        while (i < text.Length)
        {
            int len = StringInfo.GetNextTextElementLength(text.AsSpan(i));
            string grapheme = text.Substring(i, len);
            i += len;
            byte[] bytes = Encoding.UTF8.GetBytes(grapheme);
            if (bytes.Length < 6 && Shortest(bytes) is { } whole)
            {
                sb.Append(whole);
                continue;
            }
            foreach (Rune r in grapheme.EnumerateRunes())
            {
                string s = r.ToString();
                sb.Append(Shortest(Encoding.UTF8.GetBytes(s)) ?? s);
            }
        }
        return sb.ToString();
    }

    private string? Shortest(byte[] bytes)
    {
        foreach (var (_, value) in PrefixMatches(bytes, 0)) return Replacement(value);
        return null;
    }

    /// <summary>
    /// SentencePiece's own normaliser (<c>Normalizer::Normalize</c>): longest match of the map at each position (one
    /// UTF-8 character kept when none), leading/trailing/repeated spaces removed, a dummy "▁" prefix, spaces as "▁".
    /// </summary>
    public static string NormalizeLikeSentencePiece(PrecompiledCharsMap? map, string text, bool addDummyPrefix, bool removeExtraWhitespaces, bool escapeWhitespaces)
    {
        byte[] input = Encoding.UTF8.GetBytes(text);
        string space = escapeWhitespaces ? "\u2581" : " ";
        var pieces = new List<string>();
        int pos = 0;
        while (pos < input.Length)
        {
            int longest = 0, value = 0;
            if (map is not null)
            {
                foreach (var (length, v) in map.PrefixMatches(input, pos))
                {
                    if (length > longest) { longest = length; value = v; }
                }
            }
            if (longest > 0)
            {
                pieces.Add(map!.Replacement(value));
                pos += longest;
            }
            else
            {
                var status = Rune.DecodeFromUtf8(input.AsSpan(pos), out Rune r, out int consumed);
                pieces.Add(status == System.Buffers.OperationStatus.Done ? r.ToString() : "\uFFFD");
                pos += Math.Max(consumed, 1);
            }
        }

        var sb = new StringBuilder();
        int k = 0;
        if (removeExtraWhitespaces)
        {
            while (k < pieces.Count && pieces[k] == " ") k++;
        }
        if (k == pieces.Count) return "";
        bool prevSpace = removeExtraWhitespaces;
        if (addDummyPrefix) sb.Append(space);
        for (; k < pieces.Count; k++)
        {
            string p = pieces[k];
            if (prevSpace) p = p.TrimStart(' ');
            if (p.Length > 0)
            {
                sb.Append(escapeWhitespaces ? p.Replace(" ", space) : p);
                prevSpace = p.EndsWith(' ');
            }
            if (!removeExtraWhitespaces) prevSpace = false;
        }
        string result = sb.ToString();
        if (removeExtraWhitespaces)
        {
            while (result.EndsWith(space, StringComparison.Ordinal)) result = result[..^space.Length];
        }
        return result;
    }
}
