using System.Globalization;
using System.Text;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// Unicode Normalization Form C (UAX #15: canonical decomposition, canonical ordering, canonical composition), as the
/// tokenizers library's NFC normaliser applies it. Needed because the project runs with InvariantGlobalization, under
/// which .NET's <c>string.Normalize(NormalizationForm.FormC)</c> leaves non-ASCII text as it is. The canonical data
/// (decompositions, combining classes, primary composites) is Unicode 14.0's, embedded from Tokenizers/Data/nfc.txt
/// (written by tools/unicode/nfc_data.py); Hangul syllables are composed and decomposed arithmetically.
/// </summary>
internal static class UnicodeNfc
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private sealed record Tables(Dictionary<int, byte> Ccc, Dictionary<int, int[]> Decomposition, Dictionary<long, int> Composition);

    private static readonly Lazy<Tables> Data = new(Load);

    /// <summary>The NFC form of <paramref name="text"/>.</summary>
    /// <exception cref="ArgumentException">The text has an unpaired surrogate.</exception>
    public static string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        // Below U+0300 (no combining marks, no Hangul) every string is already in NFC.
        if (text.All(c => c < '\u0300')) return text;
        var data = Data.Value;
        var buffer = new List<int>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            if (Rune.DecodeFromUtf16(text.AsSpan(i), out Rune r, out int used) != System.Buffers.OperationStatus.Done)
                throw new ArgumentException($"The text has an unpaired surrogate at index {i}.", nameof(text));
            Decompose(r.Value, buffer, data);
            i += used;
        }
        Reorder(buffer, data);
        Compose(buffer, data);
        var sb = new StringBuilder(text.Length);
        foreach (int cp in buffer) sb.Append(char.ConvertFromUtf32(cp));
        return sb.ToString();
    }

    private static byte Ccc(int cp, Tables data) => data.Ccc.GetValueOrDefault(cp);

    private static void Decompose(int cp, List<int> output, Tables data)
    {
        int s = cp - SBase;
        if (s is >= 0 and < SCount)
        {
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        if (data.Decomposition.TryGetValue(cp, out var parts))
        {
            foreach (int p in parts) Decompose(p, output, data);
            return;
        }
        output.Add(cp);
    }

    /// <summary>Canonical ordering: a stable sort by combining class of every run of non-starters.</summary>
    private static void Reorder(List<int> cps, Tables data)
    {
        for (int i = 1; i < cps.Count; i++)
        {
            byte c = Ccc(cps[i], data);
            if (c == 0) continue;
            int j = i;
            while (j > 0 && Ccc(cps[j - 1], data) > c)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
    }

    /// <summary>Canonical composition: each character joins the last starter when nothing between blocks it.</summary>
    private static void Compose(List<int> cps, Tables data)
    {
        if (cps.Count == 0) return;
        int starterPos = 0;
        int starter = cps[0];
        int lastClass = Ccc(starter, data) == 0 ? 0 : 256; // a leading non-starter blocks everything after it
        int write = 1;
        for (int read = 1; read < cps.Count; read++)
        {
            int ch = cps[read];
            int chClass = Ccc(ch, data);
            int composite = ComposePair(starter, ch, data);
            if (composite >= 0 && (lastClass < chClass || lastClass == 0))
            {
                cps[starterPos] = composite;
                starter = composite;
                continue;
            }
            if (chClass == 0)
            {
                starterPos = write;
                starter = ch;
            }
            lastClass = chClass;
            cps[write++] = ch;
        }
        cps.RemoveRange(write, cps.Count - write);
    }

    private static int ComposePair(int first, int second, Tables data)
    {
        int l = first - LBase, v = second - VBase;
        if (l is >= 0 and < LCount && v is >= 0 and < VCount) return SBase + (l * VCount + v) * TCount;
        int s = first - SBase, t = second - TBase;
        if (s is >= 0 and < SCount && s % TCount == 0 && t is > 0 and < TCount) return first + t;
        return data.Composition.TryGetValue(((long)first << 21) | (uint)second, out int c) ? c : -1;
    }

    private static Tables Load()
    {
        using var stream = typeof(UnicodeNfc).Assembly.GetManifestResourceStream("DiffusersSharp.Tokenizers.nfc.txt")
            ?? throw new InvalidOperationException("The embedded Unicode data (Tokenizers/Data/nfc.txt) is missing.");
        using var reader = new StreamReader(stream);
        var ccc = new Dictionary<int, byte>();
        var decomposition = new Dictionary<int, int[]>();
        var composition = new Dictionary<long, int>();
        static int Hex(string s) => int.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var f = line.Split(' ');
            switch (f[0])
            {
                case "c":
                    ccc[Hex(f[1])] = byte.Parse(f[2], CultureInfo.InvariantCulture);
                    break;
                case "d" or "p":
                    int cp = Hex(f[1]);
                    var parts = f.Skip(2).Select(Hex).ToArray();
                    decomposition[cp] = parts;
                    if (f[0] == "p") composition[((long)parts[0] << 21) | (uint)parts[1]] = cp;
                    break;
            }
        }
        return new Tables(ccc, decomposition, composition);
    }
}
