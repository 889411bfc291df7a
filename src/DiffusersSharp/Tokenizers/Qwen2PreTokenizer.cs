using System.Globalization;
using System.Text;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// Qwen2's pre-tokenizer split (tokenizer.json: <c>Split</c> with the pattern <see cref="Pattern"/>, behaviour
/// "Isolated"), matched per Unicode code point as the tokenizers library's Oniguruma regex matches it (a .NET Regex
/// would see astral letters and digits as surrogate pairs, which are neither <c>\p{L}</c> nor <c>\p{N}</c>). Every
/// position starts a match, so the pieces cover the text. Digits are split one by one.
/// </summary>
internal static class Qwen2PreTokenizer
{
    /// <summary>The pattern Qwen2 / Qwen2.5 / Qwen3 tokenizers split with.</summary>
    public const string Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private enum Kind : byte { Letter, Number, Space, Other }

    /// <summary>The pieces of <paramref name="text"/>, in order (their concatenation is the text).</summary>
    public static List<string> Split(string text)
    {
        var starts = new List<int>(text.Length + 1);
        var runes = new List<Rune>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            if (Rune.DecodeFromUtf16(text.AsSpan(i), out Rune r, out int used) != System.Buffers.OperationStatus.Done)
                throw new ArgumentException($"The text has an unpaired surrogate at index {i}.", nameof(text));
            starts.Add(i);
            runes.Add(r);
            i += used;
        }
        starts.Add(text.Length);
        var kinds = runes.Select(KindOf).ToArray();
        var pieces = new List<string>();
        for (int i = 0; i < runes.Count;)
        {
            int end = MatchAt(runes, kinds, i);
            pieces.Add(text[starts[i]..starts[end]]);
            i = end;
        }
        return pieces;
    }

    /// <summary>End (exclusive, in code points) of the first alternative of <see cref="Pattern"/> that matches at <paramref name="i"/>.</summary>
    private static int MatchAt(List<Rune> r, Kind[] kind, int i)
    {
        int n = r.Count;
        // (?i:'s|'t|'re|'ve|'m|'ll|'d): case folding also lets U+017F (long s) stand for s.
        if (r[i].Value == '\'' && i + 1 < n)
        {
            int c1 = Fold(r[i + 1]);
            if (c1 is 's' or 't' or 'm' or 'd') return i + 2;
            if (i + 2 < n)
            {
                int c2 = Fold(r[i + 2]);
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i + 3;
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (kind[i] == Kind.Letter) return Run(kind, i, Kind.Letter);
        if (kind[i] != Kind.Number && !IsNewline(r[i]) && i + 1 < n && kind[i + 1] == Kind.Letter) return Run(kind, i + 1, Kind.Letter);
        // \p{N}
        if (kind[i] == Kind.Number) return i + 1;
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        int other = kind[i] == Kind.Other ? i : r[i].Value == ' ' && i + 1 < n && kind[i + 1] == Kind.Other ? i + 1 : -1;
        if (other >= 0)
        {
            int end = Run(kind, other, Kind.Other);
            while (end < n && IsNewline(r[end])) end++;
            return end;
        }
        // Whitespace from here on: the run is [i, spaceEnd).
        int spaceEnd = Run(kind, i, Kind.Space);
        // \s*[\r\n]+: up to the run's last \r or \n.
        for (int p = spaceEnd - 1; p >= i; p--)
        {
            if (IsNewline(r[p])) return p + 1;
        }
        // \s+(?!\S): the run at the end of the text, or all of it but its last character before a non-space.
        if (spaceEnd == n) return n;
        if (spaceEnd - i >= 2) return spaceEnd - 1;
        // \s+
        return spaceEnd;
    }

    private static int Run(Kind[] kind, int i, Kind k)
    {
        while (i < kind.Length && kind[i] == k) i++;
        return i;
    }

    private static bool IsNewline(Rune r) => r.Value is '\r' or '\n';

    /// <summary>The ASCII letter a code point case-folds to for the contraction alternatives, or the code point itself.</summary>
    private static int Fold(Rune r) => r.Value switch
    {
        >= 'A' and <= 'Z' => r.Value + 32,
        0x17F => 's',
        _ => r.Value,
    };

    private static Kind KindOf(Rune r)
    {
        if (Rune.IsWhiteSpace(r)) return Kind.Space;
        return Rune.GetUnicodeCategory(r) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Kind.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Kind.Number,
            _ => Kind.Other,
        };
    }
}
