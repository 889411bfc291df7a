using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// What the SentencePiece-style BPE tokenizers (Gemma's, Llama's tokenizer.json) share, as the tokenizers library runs
/// them: added tokens written in the text matched first (those with <c>normalized: false</c> in the raw text, the others
/// in the normalised text), the normaliser on each stretch between them, an optional pre-tokenizer, then character BPE
/// with byte fallback (<see cref="CharBpeModel"/>); and the decoding back to text.
/// </summary>
internal sealed class SentencePieceBpe
{
    /// <summary>Splits a normalised stretch into the words BPE encodes; <c>atStart</c>: the stretch starts the input.</summary>
    public delegate IEnumerable<string> PreTokenizer(string normalized, bool atStart);

    private readonly CharBpeModel _bpe;
    private readonly MetaspacePipeline _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly Dictionary<int, string> _idToToken = new();
    private readonly HashSet<int> _specialIds;

    private SentencePieceBpe(CharBpeModel bpe, MetaspacePipeline normalizer, PreTokenizer? preTokenizer, SpecialTokenSplitter added)
    {
        _bpe = bpe;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        Added = added;
        foreach (var (token, id) in bpe.Vocab) _idToToken[id] = token;
        foreach (var t in added.Tokens) _idToToken[t.Id] = t.Content;
        _specialIds = added.Tokens.Where(t => t.Special).Select(t => t.Id).ToHashSet();
        VocabSize = _idToToken.Keys.Max() + 1;
    }

    /// <summary>The added tokens (tokenizer.json's, then tokenizer_config.json's added_tokens_decoder).</summary>
    public SpecialTokenSplitter Added { get; }

    /// <summary>The largest id plus one.</summary>
    public int VocabSize { get; }

    /// <summary>
    /// Builds the shared part from tokenizer.json's root: the BPE model, the normaliser (read by
    /// <see cref="MetaspacePipeline.NormalizerOf"/>; an unsupported one is a <see cref="NotSupportedException"/>), and the
    /// added tokens of the file and of <paramref name="config"/>'s added_tokens_decoder, a normalized one matched as the
    /// normaliser writes its content (as the library does).
    /// </summary>
    public static SentencePieceBpe Read(JsonElement root, string jsonPath, TokenizerConfig config, Func<JsonElement, PreTokenizer?> preTokenizer)
    {
        var model = TokenizerFiles.Require(root, "model", JsonValueKind.Object, jsonPath);
        var bpe = CharBpeModel.FromJson(model, jsonPath);
        MetaspacePipeline normalizer;
        try
        {
            normalizer = MetaspacePipeline.NormalizerOf(root, jsonPath);
        }
        catch (InvalidDataException e) when (e.Message.Contains("is not supported", StringComparison.Ordinal))
        {
            throw new NotSupportedException(e.Message, e);
        }
        var pre = preTokenizer(root);
        var added = TokenizerFiles.AddedTokens(root, jsonPath);
        added.AddRange(config.AddedTokensDecoder);
        added = added.Select(t => t.Normalized ? t with { Pattern = normalizer.Normalize(t.Content) } : t).ToList();
        return new SentencePieceBpe(bpe, normalizer, pre, new SpecialTokenSplitter(added));
    }

    /// <summary>The id of the special token tokenizer_config.json / special_tokens_map.json names (or <paramref name="fallback"/>).</summary>
    /// <exception cref="InvalidDataException">It is neither an added token nor in the vocabulary.</exception>
    public int SpecialId(TokenizerConfig config, string name, string fallback, string what)
    {
        string token = config.Token(name) ?? fallback;
        if (TryGetId(token, out int id)) return id;
        throw new InvalidDataException($"{what}: the {name} '{token}' is neither an added token nor in the vocabulary.");
    }

    /// <summary>The id of an added token or of a vocabulary piece.</summary>
    public bool TryGetId(string token, out int id) => Added.TryGetId(token, out id) || _bpe.Vocab.TryGetValue(token, out id);

    /// <summary>The piece (or added token) of <paramref name="id"/>, or null.</summary>
    public string? IdToToken(int id) => _idToToken.GetValueOrDefault(id);

    /// <summary>The ids of the text alone: added tokens matched in the raw text, then in each normalised stretch, the rest BPE.</summary>
    public List<int> TextIds(string text)
    {
        var ids = new List<int>();
        var rawParts = Added.Split(text, normalized: false);
        for (int r = 0; r < rawParts.Count; r++)
        {
            var (part, id) = rawParts[r];
            if (id >= 0) { ids.Add(id); continue; }
            var parts = Added.Split(_normalizer.Normalize(part), normalized: true);
            for (int n = 0; n < parts.Count; n++)
            {
                var (normalizedPart, normalizedId) = parts[n];
                if (normalizedId >= 0) { ids.Add(normalizedId); continue; }
                if (_preTokenizer is null)
                {
                    _bpe.Encode(normalizedPart, ids);
                    continue;
                }
                // Only the first raw stretch starts at offset 0 of the input (Metaspace's prepend_scheme "first").
                foreach (string word in _preTokenizer(normalizedPart, r == 0 && n == 0)) _bpe.Encode(word, ids);
            }
        }
        return ids;
    }

    /// <summary>The pieces of the ids (added tokens as written).</summary>
    public List<string> Pieces(IEnumerable<int> ids) => ids.Select(id => _idToToken.GetValueOrDefault(id, "")).ToList();

    /// <summary>
    /// "▁" back to spaces, runs of <c>&lt;0xXX&gt;</c> pieces as UTF-8 (an invalid run as one U+FFFD per byte, as the
    /// library's ByteFallback decoder writes it); special tokens left out, other added tokens as written.
    /// </summary>
    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        void FlushBytes()
        {
            if (bytes.Count == 0) return;
            try
            {
                sb.Append(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes.ToArray()));
            }
            catch (DecoderFallbackException)
            {
                sb.Append('\uFFFD', bytes.Count);
            }
            bytes.Clear();
        }
        foreach (int id in ids)
        {
            if (_specialIds.Contains(id) || !_idToToken.TryGetValue(id, out string? piece)) continue;
            if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
                && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, null, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            FlushBytes();
            sb.Append(piece.Replace('\u2581', ' '));
        }
        FlushBytes();
        return sb.ToString();
    }
}
