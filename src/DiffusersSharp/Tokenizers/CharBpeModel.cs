using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// The tokenizers library's BPE model over characters (SentencePiece-style BPE, as Gemma's and Llama's tokenizer.json
/// hold it), not over bytes: a word starts as one symbol per Unicode character found in the vocabulary; a character that
/// is not there becomes its UTF-8 bytes as <c>&lt;0xXX&gt;</c> pieces (<c>byte_fallback</c>), or <c>unk_token</c>
/// (consecutive unknown characters fused into one when <c>fuse_unk</c>). The merges are then applied by rank, lowest
/// first and leftmost among equal ranks, each pair of adjacent symbols merging into the piece the merge names.
/// With <c>ignore_merges</c>, a word found whole in the vocabulary is that piece without merging.
/// </summary>
internal sealed class CharBpeModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int[] _byteIds = new int[256];
    private readonly string? _unkToken;

    private CharBpeModel(Dictionary<string, int> vocab, Dictionary<long, (int, int)> merges, string? unkToken, bool fuseUnk,
        bool byteFallback, bool ignoreMerges)
    {
        _vocab = vocab;
        _merges = merges;
        _unkToken = unkToken;
        FuseUnk = fuseUnk;
        ByteFallback = byteFallback;
        IgnoreMerges = ignoreMerges;
        for (int b = 0; b < 256; b++)
            _byteIds[b] = vocab.TryGetValue(string.Create(CultureInfo.InvariantCulture, $"<0x{b:X2}>"), out int id) ? id : -1;
    }

    /// <summary>Unknown characters in a row give one unk piece.</summary>
    public bool FuseUnk { get; }

    /// <summary>Unknown characters become their UTF-8 bytes as <c>&lt;0xXX&gt;</c> pieces.</summary>
    public bool ByteFallback { get; }

    /// <summary>A word found whole in the vocabulary is not merged.</summary>
    public bool IgnoreMerges { get; }

    /// <summary>Piece -> id.</summary>
    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    /// <summary>
    /// Reads tokenizer.json's <c>model</c> object (<c>"type": "BPE"</c>): vocab, merges ("a b" strings, or ["a", "b"]
    /// pairs as tokenizers 0.20+ writes them), unk_token, fuse_unk, byte_fallback, ignore_merges.
    /// </summary>
    /// <exception cref="InvalidDataException">The model is malformed: a merge that is not two pieces, or that names a piece
    /// (or a concatenation) missing from the vocabulary (the tokenizers library refuses these too).</exception>
    /// <exception cref="NotSupportedException">Dropout, continuing_subword_prefix or end_of_word_suffix is set.</exception>
    public static CharBpeModel FromJson(JsonElement model, string path)
    {
        if (model.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() != "BPE")
            throw new NotSupportedException($"{path}: model type \"{type.GetString()}\" is not BPE.");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() != 0)
            throw new NotSupportedException($"{path}: BPE dropout {dropout.GetDouble()} is not supported (it makes encoding random).");
        foreach (string name in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString()!.Length > 0)
                throw new NotSupportedException($"{path}: BPE {name} \"{v.GetString()}\" is not supported (SentencePiece-style BPE has none).");
        }
        var vocab = TokenizerFiles.ReadVocab(TokenizerFiles.Require(model, "vocab", JsonValueKind.Object, path), path);
        var mergesJson = TokenizerFiles.Require(model, "merges", JsonValueKind.Array, path);
        var merges = new Dictionary<long, (int, int)>();
        int rank = 0;
        foreach (var m in mergesJson.EnumerateArray())
        {
            string a, b;
            if (m.ValueKind == JsonValueKind.String)
            {
                // The library splits a legacy merge on every space and wants exactly two parts.
                string[] parts = m.GetString()!.Split(' ');
                if (parts.Length != 2) throw new InvalidDataException($"{path}: model.merges[{rank}] \"{m.GetString()}\" is not two pieces separated by one space.");
                (a, b) = (parts[0], parts[1]);
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String
                && m[1].ValueKind == JsonValueKind.String)
            {
                (a, b) = (m[0].GetString()!, m[1].GetString()!);
            }
            else throw new InvalidDataException($"{path}: model.merges[{rank}] is neither an \"a b\" string nor an [a, b] pair.");
            if (!vocab.TryGetValue(a, out int aId)) throw new InvalidDataException($"{path}: model.merges[{rank}] names \"{a}\", which is not in the vocabulary.");
            if (!vocab.TryGetValue(b, out int bId)) throw new InvalidDataException($"{path}: model.merges[{rank}] names \"{b}\", which is not in the vocabulary.");
            if (!vocab.TryGetValue(a + b, out int newId)) throw new InvalidDataException($"{path}: model.merges[{rank}] makes \"{a + b}\", which is not in the vocabulary.");
            // A repeated pair keeps its last rank, as the library's map built from the list does.
            merges[Key(aId, bId)] = (rank, newId);
            rank++;
        }
        string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
        return new CharBpeModel(vocab, merges, unk, Flag(model, "fuse_unk"), Flag(model, "byte_fallback"), Flag(model, "ignore_merges"));
    }

    private static bool Flag(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    /// <summary>Appends the ids of <paramref name="word"/> (one pre-tokenized, normalised piece) to <paramref name="output"/>.</summary>
    /// <exception cref="InvalidDataException">An unknown character needs unk_token, which is not in the vocabulary.</exception>
    public void Encode(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (IgnoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        var symbols = new List<int>(word.Length);
        int pendingUnk = -1; // an unk symbol not yet written: the library writes it when the next known character comes
        Span<byte> utf8 = stackalloc byte[4];
        foreach (Rune rune in word.EnumerateRunes())
        {
            string ch = rune.ToString();
            if (_vocab.TryGetValue(ch, out int id))
            {
                if (pendingUnk >= 0) symbols.Add(pendingUnk);
                pendingUnk = -1;
                symbols.Add(id);
                continue;
            }
            if (ByteFallback)
            {
                int n = rune.EncodeToUtf8(utf8);
                bool all = true;
                for (int k = 0; k < n; k++) all &= _byteIds[utf8[k]] >= 0;
                if (all)
                {
                    // As the library does, a pending unk stays pending across byte pieces (it is written after them).
                    for (int k = 0; k < n; k++) symbols.Add(_byteIds[utf8[k]]);
                    continue;
                }
            }
            if (_unkToken is null) continue; // no unk token: the library drops the character
            if (!_vocab.TryGetValue(_unkToken, out int unkId))
                throw new InvalidDataException($"The BPE unk_token \"{_unkToken}\" is not in the vocabulary.");
            if (pendingUnk >= 0 && !FuseUnk) symbols.Add(pendingUnk);
            pendingUnk = unkId;
        }
        if (pendingUnk >= 0) symbols.Add(pendingUnk);
        Merge(symbols);
        output.AddRange(symbols);
    }

    /// <summary>
    /// Applies the merges as the library's Word.merge_all does: a queue of (rank, position) candidates, lowest rank
    /// first, then leftmost; a candidate whose symbols have changed since it was queued is skipped.
    /// </summary>
    private void Merge(List<int> ids)
    {
        int n = ids.Count;
        if (n < 2) return;
        var c = ids.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        var queue = new PriorityQueue<(int Pos, int NewId), (int Rank, int Pos)>();
        for (int i = 0; i + 1 < n; i++)
        {
            if (_merges.TryGetValue(Key(c[i], c[i + 1]), out var m)) queue.Enqueue((i, m.NewId), (m.Rank, i));
        }
        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (!alive[pos] || next[pos] < 0) continue;
            int right = next[pos];
            if (!_merges.TryGetValue(Key(c[pos], c[right]), out var current) || current.NewId != top.NewId) continue;
            c[pos] = top.NewId;
            alive[right] = false;
            next[pos] = next[right];
            if (next[pos] >= 0) prev[next[pos]] = pos;
            if (prev[pos] >= 0 && _merges.TryGetValue(Key(c[prev[pos]], c[pos]), out var left))
                queue.Enqueue((prev[pos], left.NewId), (left.Rank, prev[pos]));
            if (next[pos] >= 0 && _merges.TryGetValue(Key(c[pos], c[next[pos]]), out var after))
                queue.Enqueue((pos, after.NewId), (after.Rank, pos));
        }
        ids.Clear();
        for (int i = 0; i < n; i++)
        {
            if (alive[i]) ids.Add(c[i]);
        }
    }
}
