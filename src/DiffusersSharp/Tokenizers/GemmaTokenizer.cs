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
    private readonly SentencePieceBpe _model;
    private readonly int[] _prefix;
    private readonly int[] _suffix;

    private GemmaTokenizer(SentencePieceBpe model, int bos, int eos, int pad, int unk, bool addBos, bool addEos, int maxLength,
        PaddingSide paddingSide)
    {
        _model = model;
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
        VocabSize = model.VocabSize;
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
        return _model.TryGetId(token, out int id) ? id : null;
    }

    /// <summary>The piece (or added token) of <paramref name="id"/>, or null.</summary>
    public string? IdToToken(int id) => _model.IdToToken(id);

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
        var model = SentencePieceBpe.Read(root, jsonPath, config, _ => ReadPreTokenizer(root, jsonPath) ? SplitAfterSpaces : null);
        int Id(string name, string fallback) => model.SpecialId(config, name, fallback, $"Gemma tokenizer in {folder}");
        int bos = Id("bos_token", "<bos>"), eos = Id("eos_token", "<eos>"), pad = Id("pad_token", "<pad>"), unk = Id("unk_token", "<unk>");
        var side = config.PaddingSide switch
        {
            null or "right" => PaddingSide.Right,
            "left" => PaddingSide.Left,
            var other => throw new InvalidDataException($"{Path.Combine(folder, "tokenizer_config.json")}: padding_side \"{other}\" is neither \"right\" nor \"left\"."),
        };
        return new GemmaTokenizer(model, bos, eos, pad, unk, config.AddBosToken ?? true,
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

    /// <summary>Split(" ", MergedWithPrevious): a word ends after each space.</summary>
    private static IEnumerable<string> SplitAfterSpaces(string normalized, bool atStart)
    {
        int start = 0;
        for (int i = 0; i < normalized.Length; i++)
        {
            if (normalized[i] != ' ') continue;
            yield return normalized[start..(i + 1)];
            start = i + 1;
        }
        yield return normalized[start..];
    }

    /// <summary>
    /// transformers' <c>tokenizer.encode(text)</c> (add_special_tokens=True): <c>&lt;bos&gt;</c> and the text's ids, no
    /// truncation or padding. With <paramref name="addSpecialTokens"/> false, the text's ids alone.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var body = _model.TextIds(text);
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
        return TokenLayout.Build(_model.TextIds(text), _prefix, _suffix, maxLength, PadTokenId, padToMaxLength, truncate);
    }

    /// <summary>
    /// transformers' <c>tokenizer(texts, padding="max_length", max_length=maxLength, truncation=truncate,
    /// add_special_tokens=True)</c>: each text encoded with the special tokens, cut to <paramref name="maxLength"/> ids
    /// (keeping <c>&lt;bos&gt;</c>), padded with <c>&lt;pad&gt;</c> on <paramref name="paddingSide"/> (default
    /// <see cref="PaddingSide"/>; SanaPipeline sets "right"), with the attention mask 1 on the ids and 0 on the padding.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxLength"/> is below 1 or cannot hold the special tokens.</exception>
    /// <exception cref="ArgumentException">A text is longer than <paramref name="maxLength"/> ids and <paramref name="truncate"/> is false.</exception>
    public TokenizedBatch EncodeBatch(IReadOnlyList<string> texts, int maxLength, bool truncate = true, PaddingSide? paddingSide = null) =>
        TokenLayout.Batch(texts, text => Encode(text, maxLength, padToMaxLength: false, truncate), maxLength, PadTokenId, paddingSide ?? PaddingSide);

    /// <summary>transformers' <c>tokenize(text)</c>: the pieces of the text (no special tokens added), added tokens as written.</summary>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _model.Pieces(_model.TextIds(text));
    }

    /// <inheritdoc />
    /// <remarks>Gemma's decoder: "▁" back to spaces, runs of <c>&lt;0xXX&gt;</c> pieces as UTF-8 (an invalid run as one
    /// U+FFFD per byte, as the library's ByteFallback decoder writes it); special tokens left out, other added tokens as written.</remarks>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return _model.Decode(ids);
    }
}
