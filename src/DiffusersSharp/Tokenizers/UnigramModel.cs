using System.Text;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// A SentencePiece Unigram model: the segmentation of a string into pieces with the highest total score (Viterbi over
/// a byte trie of the pieces). Characters no piece covers become the unknown token; runs of them are fused into one.
/// </summary>
internal sealed class UnigramModel
{
    private const double UnknownPenalty = 10.0;

    private sealed class Node
    {
        public Dictionary<byte, Node>? Children;
        public int Id = -1;
    }

    private readonly Node _root = new();
    private readonly double[] _scores;
    private readonly bool _sentencePieceScoring;
    private readonly float _maxNormalScore;
    private readonly double _unknownScore;
    private readonly Func<int, bool> _userDefined;

    public string[] Pieces { get; }
    public int UnkId { get; }

    /// <param name="pieces">Pieces by id.</param>
    /// <param name="scores">Log-probability of each piece.</param>
    /// <param name="unkId">Id of the unknown token.</param>
    /// <param name="matchable">Which ids segmentation may use (null: all, as the tokenizers library does).</param>
    /// <param name="sentencePieceScoring">SentencePiece's float arithmetic, unknown score from normal pieces, and
    /// user-defined pieces scored <c>length * max - 0.1</c>; otherwise the tokenizers library's double arithmetic.</param>
    /// <param name="userDefined">Ids of user-defined pieces (only with <paramref name="sentencePieceScoring"/>).</param>
    /// <param name="normal">Ids of normal pieces (only with <paramref name="sentencePieceScoring"/>).</param>
    public UnigramModel(string[] pieces, double[] scores, int unkId, Func<int, bool>? matchable = null, bool sentencePieceScoring = false,
        Func<int, bool>? userDefined = null, Func<int, bool>? normal = null)
    {
        Pieces = pieces;
        _scores = scores;
        UnkId = unkId;
        _sentencePieceScoring = sentencePieceScoring;
        _userDefined = userDefined ?? (_ => false);

        // Later duplicates win, as in the tokenizers library's token -> id map.
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++)
        {
            if (pieces[i].Length > 0 && (matchable?.Invoke(i) ?? true)) ids[pieces[i]] = i;
        }
        foreach (var (piece, id) in ids) Insert(Encoding.UTF8.GetBytes(piece), id);

        if (sentencePieceScoring)
        {
            float min = float.MaxValue, max = float.MinValue;
            for (int i = 0; i < pieces.Length; i++)
            {
                if (normal?.Invoke(i) ?? true)
                {
                    min = Math.Min(min, (float)scores[i]);
                    max = Math.Max(max, (float)scores[i]);
                }
            }
            _maxNormalScore = max;
            _unknownScore = (float)(min - (float)UnknownPenalty);
        }
        else
        {
            _unknownScore = scores.Length == 0 ? -UnknownPenalty : scores.Min() - UnknownPenalty;
        }
    }

    private void Insert(byte[] key, int id)
    {
        var node = _root;
        foreach (byte b in key)
        {
            node.Children ??= new Dictionary<byte, Node>();
            if (!node.Children.TryGetValue(b, out var next)) node.Children[b] = next = new Node();
            node = next;
        }
        node.Id = id;
    }

    /// <summary>Ids of the best segmentation of <paramref name="text"/>, runs of unknown characters fused.</summary>
    public List<int> Encode(string text)
    {
        byte[] s = Encoding.UTF8.GetBytes(text);
        int n = s.Length;
        var bestScore = new double[n + 1];
        var startsAt = new int[n + 1];
        var bestId = new int[n + 1];
        Array.Fill(startsAt, -1);
        int pos = 0;
        while (pos < n)
        {
            double here = bestScore[pos];
            int charLen = Utf8Length(s[pos]);
            bool hasSingle = false;
            var node = _root;
            for (int end = pos; end < n; end++)
            {
                if (node.Children is null || !node.Children.TryGetValue(s[end], out node!)) break;
                if (node.Id < 0) continue;
                int length = end + 1 - pos;
                double score = _sentencePieceScoring && _userDefined(node.Id) ? length * _maxNormalScore - 0.1 : _scores[node.Id];
                Relax(end + 1, Add(here, score), pos, node.Id);
                if (length == charLen) hasSingle = true;
            }
            if (!hasSingle) Relax(Math.Min(pos + charLen, n), Add(here, _unknownScore), pos, UnkId);
            pos += charLen;
        }

        var result = new List<int>();
        bool prevUnknown = false;
        for (int end = n; end > 0;)
        {
            int start = startsAt[end];
            if (start < 0) throw new InvalidOperationException("Unigram lattice has no path; the text is not valid UTF-8.");
            int id = bestId[end];
            if (id == UnkId && prevUnknown) { end = start; continue; }
            result.Add(id);
            prevUnknown = id == UnkId;
            end = start;
        }
        result.Reverse();
        return result;

        void Relax(int at, double score, int from, int id)
        {
            if (startsAt[at] < 0 || score > bestScore[at])
            {
                bestScore[at] = score;
                startsAt[at] = from;
                bestId[at] = id;
            }
        }
    }

    private double Add(double a, double b) => _sentencePieceScoring ? (float)((float)a + (float)b) : a + b;

    private static int Utf8Length(byte lead) => lead switch
    {
        < 0x80 => 1,
        >= 0xF0 => 4,
        >= 0xE0 => 3,
        >= 0xC0 => 2,
        _ => 1,
    };
}
