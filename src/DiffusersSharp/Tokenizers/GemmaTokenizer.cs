using System.Text;
using System.Text.Json;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// Gemma's tokenizer (Gemma / Gemma 2; Sana's <c>GemmaTokenizerFast</c> of gemma-2-2b-it), giving the ids of the
/// tokenizers library's <c>tokenizer.json</c>: added tokens written in the text (<c>&lt;start_of_turn&gt;</c>,
/// <c>&lt;bos&gt;</c>, newline runs, ...) are matched first, leftmost and longest; the rest is normalised
/// (Replace(" " -> "▁"); no pre-tokenizer, so a whole stretch is one word) and encoded by SentencePiece-style character
/// BPE with byte fallback (<see cref="CharBpeModel"/>). <c>&lt;bos&gt;</c> is put in front (and <c>&lt;eos&gt;</c> at the
/// end) as tokenizer_config.json's <c>add_bos_token</c> / <c>add_eos_token</c> say, which is how transformers' fast
/// Gemma tokenizer rebuilds its post-processor. Truncation keeps them; padding uses <c>&lt;pad&gt;</c> (id 0).
/// </summary>
public sealed class GemmaTokenizer : ITextTokenizer
{
    private readonly CharBpeModel _bpe;
    private readonly MetaspacePipeline _normalizer;
    private readonly bool _splitOnSpace;
    private readonly SpecialTokenSplitter _added;
    private readonly Dictionary<int, string> _idToToken = new();
    private readonly HashSet<int> _specialIds;
    private readonly int[] _prefix;
    private readonly int[] _suffix;

    private GemmaTokenizer(CharBpeModel bpe, MetaspacePipeline normalizer, bool splitOnSpace, SpecialTokenSplitter added,
        int bos, int eos, int pad, int unk, bool addBos, bool addEos, int maxLength, PaddingSide paddingSide)
    {
        _bpe = bpe;
        _normalizer = normalizer;
        _splitOnSpace = splitOnSpace;
        _added = added;
        foreach (var (token, id) in bpe.Vocab) _idToToken[id] = token;
        foreach (var t in added.Tokens) _idToToken[t.Id] = t.Content;
        _specialIds = added.Tokens.Where(t => t.Special).Select(t => t.Id).ToHashSet();
        BosTokenId = bos;
        EosTokenId = eos;
        PadTokenId = pad;
        UnkTokenId = unk;
        AddBosToken = addBos;
        AddEosToken = addEos;
        _prefix = addBos ? [bos] : [];
        _suffix = addEos ? [eos] : [];
        ModelMaxLength = maxLength;
        PaddingSide = paddingSide;
        VocabSize = _idToToken.Keys.Max() + 1;
    }

    /// <inheritdoc />
    /// <remarks>From tokenizer_config.json (gemma-2: 8192); 8192 when the file gives none (transformers writes 1e30 for "no limit").</remarks>
    public int ModelMaxLength { get; }

    /// <inheritdoc />
    /// <remarks><c>&lt;pad&gt;</c>, id 0 in Gemma.</remarks>
    public int PadTokenId { get; }

    /// <inheritdoc />
    /// <remarks><c>&lt;eos&gt;</c>, id 1 in Gemma; added only when <see cref="AddEosToken"/> is set (not for Sana).</remarks>
    public int EosTokenId { get; }

    /// <summary><c>&lt;bos&gt;</c>, id 2 in Gemma, put in front of every encoding when <see cref="AddBosToken"/> is set.</summary>
    public int BosTokenId { get; }

    /// <summary><c>&lt;unk&gt;</c>, id 3 in Gemma (only for characters byte fallback cannot write).</summary>
    public int UnkTokenId { get; }

    /// <summary>tokenizer_config.json's add_bos_token (true when not given, as transformers' Gemma tokenizer defaults).</summary>
    public bool AddBosToken { get; }

    /// <summary>tokenizer_config.json's add_eos_token (false when not given).</summary>
    public bool AddEosToken { get; }

    /// <summary>tokenizer_config.json's padding_side (right when not given); <see cref="EncodeBatch"/> uses it unless told otherwise.</summary>
    public PaddingSide PaddingSide { get; }

    /// <inheritdoc />
    public int VocabSize { get; }

    /// <summary>The id of an added token or of a vocabulary piece, or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_added.TryGetId(token, out int id)) return id;
        return _bpe.Vocab.TryGetValue(token, out id) ? id : null;
    }

    /// <summary>The piece (or added token) of <paramref name="id"/>, or null.</summary>
    public string? IdToToken(int id) => _idToToken.GetValueOrDefault(id);

    /// <summary>
    /// Loads a Gemma tokenizer folder: <c>tokenizer.json</c> (BPE vocabulary and merges, normaliser, added tokens) and
    /// the optional <c>tokenizer_config.json</c> / <c>special_tokens_map.json</c> (bos / eos / pad / unk tokens,
    /// add_bos_token, add_eos_token, model_max_length, padding_side, added_tokens_decoder). <c>tokenizer.model</c>
    /// (SentencePiece) is not read.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">tokenizer.json is not there.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed (not JSON, missing model / vocab / merges, a
    /// merge naming pieces not in the vocabulary, a special token unknown, an unknown padding_side); the message names the file.</exception>
    /// <exception cref="NotSupportedException">tokenizer.json describes a pipeline other than Gemma's (a pre-tokenizer
    /// other than none / Split(" "), an unsupported normaliser, BPE dropout or subword prefixes / suffixes), or
    /// tokenizer_config.json asks for split_special_tokens.</exception>
    public static GemmaTokenizer FromFolder(string folder)
    {
        TokenizerFiles.RequireFolder(folder);
        string jsonPath = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(jsonPath))
            throw new FileNotFoundException($"Gemma tokenizer file not found: {jsonPath} (DiffusersSharp reads tokenizer.json, not tokenizer.model).", jsonPath);
        var config = TokenizerConfig.Read(folder);
        if (config.SplitSpecialTokens)
            throw new NotSupportedException($"{folder}: split_special_tokens = true is not supported by DiffusersSharp (Gemma matches its special tokens).");

        using var doc = TokenizerFiles.ReadJson(jsonPath);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{jsonPath}: expected a JSON object.");
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
        bool splitOnSpace = ReadPreTokenizer(root, jsonPath);

        var added = TokenizerFiles.AddedTokens(root, jsonPath);
        added.AddRange(config.AddedTokensDecoder);
        // A normalized added token is looked for in normalised text, so as the normaliser writes it (" " -> "▁").
        added = added.Select(t => t.Normalized ? t with { Pattern = normalizer.Normalize(t.Content) } : t).ToList();
        var splitter = new SpecialTokenSplitter(added);
        int Id(string name, string fallback)
        {
            string token = config.Token(name) ?? fallback;
            if (splitter.TryGetId(token, out int id) || bpe.Vocab.TryGetValue(token, out id)) return id;
            throw new InvalidDataException($"Gemma tokenizer in {folder}: the {name} '{token}' is neither an added token nor in the vocabulary.");
        }
        int bos = Id("bos_token", "<bos>"), eos = Id("eos_token", "<eos>"), pad = Id("pad_token", "<pad>"), unk = Id("unk_token", "<unk>");
        var side = config.PaddingSide switch
        {
            null or "right" => PaddingSide.Right,
            "left" => PaddingSide.Left,
            var other => throw new InvalidDataException($"{Path.Combine(folder, "tokenizer_config.json")}: padding_side \"{other}\" is neither \"right\" nor \"left\"."),
        };
        return new GemmaTokenizer(bpe, normalizer, splitOnSpace, splitter, bos, eos, pad, unk, config.AddBosToken ?? true,
            config.AddEosToken ?? false, config.ModelMaxLength ?? 8192, side);
    }

    /// <summary>
    /// Gemma's tokenizer.json has no pre-tokenizer; transformers' newer GemmaConverter writes Split(" ",
    /// merged_with_previous), which splits after each space (none is left after the normaliser, but it is honoured).
    /// Returns whether that split is on.
    /// </summary>
    private static bool ReadPreTokenizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind == JsonValueKind.Null) return false;
        static string? Str(JsonElement e, string name) =>
            e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        if (Str(pre, "type") == "Split" && pre.TryGetProperty("pattern", out var pattern) && Str(pattern, "String") == " "
            && Str(pre, "behavior") == "MergedWithPrevious"
            && !(pre.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True))
            return true;
        throw new NotSupportedException($"{path}: the pre_tokenizer is not Gemma's (none, or Split(\" \", MergedWithPrevious)); DiffusersSharp's GemmaTokenizer implements only Gemma's pipeline.");
    }

    /// <summary>
    /// transformers' <c>tokenizer.encode(text)</c> (add_special_tokens=True): <c>&lt;bos&gt;</c> and the text's ids, no
    /// truncation or padding. With <paramref name="addSpecialTokens"/> false, the text's ids alone.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var body = TextIds(text);
        if (!addSpecialTokens) return body;
        var ids = new List<int>(body.Count + _prefix.Length + _suffix.Length);
        ids.AddRange(_prefix);
        ids.AddRange(body);
        ids.AddRange(_suffix);
        return ids;
    }

    /// <inheritdoc />
    /// <remarks><c>&lt;bos&gt;</c> (when <see cref="AddBosToken"/>), the text's ids cut to leave room for the special
    /// tokens, <c>&lt;eos&gt;</c> (when <see cref="AddEosToken"/>), then <c>&lt;pad&gt;</c> on the right.</remarks>
    public TokenizedText Encode(string text, int maxLength, bool padToMaxLength = true, bool truncate = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TokenLayout.Build(TextIds(text), _prefix, _suffix, maxLength, PadTokenId, padToMaxLength, truncate);
    }

    /// <summary>
    /// transformers' <c>tokenizer(texts, padding="max_length", max_length=maxLength, truncation=truncate,
    /// add_special_tokens=True)</c>: each text encoded with the special tokens, cut to <paramref name="maxLength"/> ids
    /// (keeping <c>&lt;bos&gt;</c>), padded with <c>&lt;pad&gt;</c> on <paramref name="paddingSide"/> (default
    /// <see cref="PaddingSide"/>; SanaPipeline sets "right"), with the attention mask 1 on the ids and 0 on the padding.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxLength"/> is below 1 or cannot hold the special tokens.</exception>
    /// <exception cref="ArgumentException">A text is longer than <paramref name="maxLength"/> ids and <paramref name="truncate"/> is false.</exception>
    public TokenizedBatch EncodeBatch(IReadOnlyList<string> texts, int maxLength, bool truncate = true, PaddingSide? paddingSide = null)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (texts.Count == 0) throw new ArgumentException("At least one text is needed.", nameof(texts));
        var side = paddingSide ?? PaddingSide;
        var rows = new List<TokenizedText>(texts.Count);
        foreach (string text in texts)
        {
            ArgumentNullException.ThrowIfNull(text, nameof(texts));
            var row = Encode(text, maxLength, padToMaxLength: false, truncate);
            if (row.Ids.Length > maxLength)
                throw new ArgumentException($"A text gives {row.Ids.Length} ids, more than max_length {maxLength}, and truncation is off.", nameof(texts));
            rows.Add(row);
        }
        var ids = new long[rows.Count * maxLength];
        var mask = new long[rows.Count * maxLength];
        for (int i = 0; i < rows.Count; i++)
        {
            int[] row = rows[i].Ids;
            int start = side == PaddingSide.Right ? 0 : maxLength - row.Length;
            for (int j = 0; j < maxLength; j++)
            {
                int k = j - start;
                bool real = k >= 0 && k < row.Length;
                ids[i * maxLength + j] = real ? row[k] : PadTokenId;
                mask[i * maxLength + j] = real ? 1 : 0;
            }
        }
        return new TokenizedBatch(ids, mask, rows.Select(r => r.Ids.Length).ToArray(), rows.Select(r => r.UntruncatedLength).ToArray(), maxLength);
    }

    /// <summary>transformers' <c>tokenize(text)</c>: the pieces of the text (no special tokens added), added tokens as written.</summary>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TextIds(text).Select(id => _idToToken.GetValueOrDefault(id, "")).ToList();
    }

    /// <summary>The ids of the text alone: added tokens matched in the raw text, then in each normalised stretch, the rest BPE.</summary>
    private List<int> TextIds(string text)
    {
        var ids = new List<int>();
        foreach (var (part, id) in _added.Split(text, normalized: false))
        {
            if (id >= 0) { ids.Add(id); continue; }
            foreach (var (normalizedPart, normalizedId) in _added.Split(_normalizer.Normalize(part), normalized: true))
            {
                if (normalizedId >= 0) { ids.Add(normalizedId); continue; }
                if (!_splitOnSpace)
                {
                    _bpe.Encode(normalizedPart, ids);
                    continue;
                }
                int start = 0;
                for (int i = 0; i < normalizedPart.Length; i++)
                {
                    if (normalizedPart[i] != ' ') continue;
                    _bpe.Encode(normalizedPart[start..(i + 1)], ids);
                    start = i + 1;
                }
                _bpe.Encode(normalizedPart[start..], ids);
            }
        }
        return ids;
    }

    /// <inheritdoc />
    /// <remarks>Gemma's decoder: "▁" back to spaces, runs of <c>&lt;0xXX&gt;</c> pieces as UTF-8 (an invalid run as one
    /// U+FFFD per byte, as the library's ByteFallback decoder writes it); special tokens left out, other added tokens as written.</remarks>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
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
                && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b))
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
