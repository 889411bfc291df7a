using System.Text;
using System.Text.Json;

namespace DiffusersSharp.Tokenizers;

/// <summary>How <see cref="T5Tokenizer"/> turns text into pieces.</summary>
public enum T5TokenizerMode
{
    /// <summary>
    /// transformers' T5TokenizerFast (what diffusers uses): special tokens written in the text (<c>&lt;/s&gt;</c>,
    /// <c>&lt;pad&gt;</c>, <c>&lt;unk&gt;</c>, <c>&lt;extra_id_N&gt;</c>) are matched as tokens; the rest is normalised
    /// with the precompiled charsmap per grapheme, split on whitespace, prefixed with "▁" per word and segmented.
    /// </summary>
    Transformers,

    /// <summary>Plain SentencePiece <c>encode(text) + [&lt;/s&gt;]</c>: no special-token matching (needs spiece.model).</summary>
    SentencePiece,
}

/// <summary>
/// T5's SentencePiece Unigram tokenizer, giving the ids of transformers' <c>T5TokenizerFast</c> as SD3 calls it:
/// text ids, <c>&lt;/s&gt;</c>, then <c>&lt;pad&gt;</c> (id 0) up to the requested length; truncation keeps <c>&lt;/s&gt;</c> last.
/// Loads <c>tokenizer.json</c> (Unigram vocab with scores, precompiled charsmap) or <c>spiece.model</c>.
/// </summary>
public sealed class T5Tokenizer : ITextTokenizer
{
    private readonly UnigramModel _model;
    private readonly PrecompiledCharsMap? _charsMap;
    private readonly MetaspacePipeline _pipeline;
    private readonly SpecialTokenSplitter _special;
    private readonly HashSet<int> _specialIds;
    private readonly SentencePieceModel? _spm;
    private readonly Dictionary<int, string> _idToToken = new();

    private T5Tokenizer(T5TokenizerMode mode, UnigramModel model, PrecompiledCharsMap? charsMap, MetaspacePipeline pipeline,
        SpecialTokenSplitter special, SentencePieceModel? spm, int eos, int pad, int maxLength)
    {
        _pipeline = pipeline;
        Mode = mode;
        _model = model;
        _charsMap = charsMap;
        _special = special;
        _spm = spm;
        EosTokenId = eos;
        PadTokenId = pad;
        ModelMaxLength = maxLength;
        for (int i = 0; i < model.Pieces.Length; i++) _idToToken[i] = model.Pieces[i];
        foreach (var t in special.Tokens) _idToToken[t.Id] = t.Content;
        _specialIds = special.Tokens.Select(t => t.Id).ToHashSet();
        VocabSize = _idToToken.Keys.Max() + 1;
    }

    /// <summary>How this instance segments text.</summary>
    public T5TokenizerMode Mode { get; }

    /// <inheritdoc />
    public int ModelMaxLength { get; }

    /// <inheritdoc />
    public int PadTokenId { get; }

    /// <inheritdoc />
    public int EosTokenId { get; }

    /// <inheritdoc />
    public int VocabSize { get; }

    /// <summary>
    /// Loads a T5 tokenizer folder: <c>tokenizer.json</c> when present, else <c>spiece.model</c>; special tokens and
    /// <c>model_max_length</c> from tokenizer_config.json / special_tokens_map.json. <see cref="T5TokenizerMode.SentencePiece"/>
    /// needs spiece.model.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">Neither tokenizer.json nor spiece.model is there.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed (the message names it).</exception>
    public static T5Tokenizer FromFolder(string folder, T5TokenizerMode mode = T5TokenizerMode.Transformers) =>
        Load(folder, mode, preferSentencePieceModel: mode == T5TokenizerMode.SentencePiece);

    internal static T5Tokenizer Load(string folder, T5TokenizerMode mode, bool preferSentencePieceModel)
    {
        TokenizerFiles.RequireFolder(folder);
        string jsonPath = Path.Combine(folder, "tokenizer.json");
        string spmPath = Path.Combine(folder, "spiece.model");
        bool hasJson = File.Exists(jsonPath), hasSpm = File.Exists(spmPath);
        if (mode == T5TokenizerMode.SentencePiece && !hasSpm)
            throw new FileNotFoundException($"SentencePiece mode needs spiece.model, not found in {folder}.", spmPath);
        if (!hasJson && !hasSpm)
            throw new FileNotFoundException($"T5 tokenizer files not found in {folder}: expected tokenizer.json or spiece.model.", jsonPath);
        var config = TokenizerConfig.Read(folder);
        return hasSpm && (preferSentencePieceModel || !hasJson) ? FromSentencePiece(spmPath, config, mode) : FromTokenizerJson(jsonPath, config);
    }

    private static T5Tokenizer FromTokenizerJson(string path, TokenizerConfig config)
    {
        using var doc = TokenizerFiles.ReadJson(path);
        var root = doc.RootElement;
        var model = TokenizerFiles.Require(root, "model", JsonValueKind.Object, path);
        if (model.TryGetProperty("type", out var type) && type.GetString() is { } t && t != "Unigram")
            throw new InvalidDataException($"{path}: model type is \"{t}\", a T5 tokenizer needs \"Unigram\".");
        var vocab = TokenizerFiles.Require(model, "vocab", JsonValueKind.Array, path);
        int count = vocab.GetArrayLength();
        if (count == 0) throw new InvalidDataException($"{path}: model.vocab is empty.");
        var pieces = new string[count];
        var scores = new double[count];
        int i = 0;
        foreach (var entry in vocab.EnumerateArray())
        {
            if (entry.ValueKind != JsonValueKind.Array || entry.GetArrayLength() != 2 || entry[0].ValueKind != JsonValueKind.String
                || entry[1].ValueKind != JsonValueKind.Number)
                throw new InvalidDataException($"{path}: model.vocab[{i}] is not a [piece, score] pair.");
            pieces[i] = entry[0].GetString()!;
            scores[i] = entry[1].GetDouble();
            i++;
        }
        int unkId = model.TryGetProperty("unk_id", out var u) && u.ValueKind == JsonValueKind.Number ? u.GetInt32() : 0;
        if (unkId < 0 || unkId >= count) throw new InvalidDataException($"{path}: model.unk_id {unkId} is outside the vocabulary.");

        var pipeline = MetaspacePipeline.FromTokenizerJson(root, path);
        var added = TokenizerFiles.AddedTokens(root, path);
        added.AddRange(config.AddedTokensDecoder);
        return Build(T5TokenizerMode.Transformers, new UnigramModel(pieces, scores, unkId), null, pipeline, added, pieces, config, null);
    }

    private static T5Tokenizer FromSentencePiece(string path, TokenizerConfig config, T5TokenizerMode mode)
    {
        var spm = SentencePieceModel.Read(path);
        int n = spm.Pieces.Count;
        if (spm.UnkId < 0 || spm.UnkId >= n) throw new InvalidDataException($"{path}: unk_id {spm.UnkId} is outside the vocabulary.");
        // transformers appends the <extra_id_N> sentinels after the SentencePiece vocabulary, <extra_id_0> last.
        int extra = config.ExtraIds ?? 100;
        var pieces = new string[n + extra];
        var scores = new double[n + extra];
        for (int i = 0; i < n; i++)
        {
            pieces[i] = spm.Pieces[i].Piece;
            scores[i] = spm.Pieces[i].Score;
        }
        var added = new List<AddedToken>();
        for (int i = 0; i < n; i++)
        {
            if (spm.Pieces[i].Type is SentencePieceModel.PieceType.Control or SentencePieceModel.PieceType.Unknown && pieces[i].Length > 0)
                added.Add(new AddedToken(pieces[i], i));
        }
        for (int k = 0; k < extra; k++)
        {
            pieces[n + extra - 1 - k] = $"<extra_id_{k}>";
            added.Add(config.Special($"<extra_id_{k}>", n + extra - 1 - k));
        }
        added.AddRange(config.AddedTokensDecoder);
        PrecompiledCharsMap? charsMap = spm.PrecompiledCharsMap.Length > 0 ? new PrecompiledCharsMap(spm.PrecompiledCharsMap, path) : null;
        UnigramModel model = mode == T5TokenizerMode.SentencePiece
            ? new UnigramModel(pieces, scores, spm.UnkId,
                matchable: id => id < n && spm.Pieces[id].Type is SentencePieceModel.PieceType.Normal or SentencePieceModel.PieceType.UserDefined,
                sentencePieceScoring: true,
                userDefined: id => id < n && spm.Pieces[id].Type == SentencePieceModel.PieceType.UserDefined,
                normal: id => id < n && spm.Pieces[id].Type == SentencePieceModel.PieceType.Normal)
            : new UnigramModel(pieces, scores, spm.UnkId);
        return Build(mode, model, charsMap, MetaspacePipeline.Default(charsMap), added, pieces, config, spm);
    }

    private static T5Tokenizer Build(T5TokenizerMode mode, UnigramModel model, PrecompiledCharsMap? charsMap, MetaspacePipeline pipeline,
        List<AddedToken> added,
        string[] pieces, TokenizerConfig config, SentencePieceModel? spm)
    {
        string eos = config.Token("eos_token") ?? "</s>";
        string pad = config.Token("pad_token") ?? "<pad>";
        string unk = config.Token("unk_token") ?? "<unk>";
        int nextId = Math.Max(pieces.Length, added.Count == 0 ? 0 : added.Max(a => a.Id) + 1);
        foreach (string content in new[] { eos, unk, pad }.Concat(config.AdditionalSpecialTokens))
        {
            if (added.Any(a => a.Content == content)) continue;
            int id = Array.IndexOf(pieces, content);
            added.Add(config.Special(content, id >= 0 ? id : nextId++));
        }
        var special = new SpecialTokenSplitter(added);
        special.TryGetId(eos, out int eosId);
        special.TryGetId(pad, out int padId);
        return new T5Tokenizer(mode, model, charsMap, pipeline, special, spm, eosId, padId, config.ModelMaxLength ?? 512);
    }

    /// <inheritdoc />
    public TokenizedText Encode(string text, int maxLength, bool padToMaxLength = true, bool truncate = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var body = new List<int>();
        if (Mode == T5TokenizerMode.SentencePiece)
        {
            string normalized = PrecompiledCharsMap.NormalizeLikeSentencePiece(_charsMap, text, _spm!.AddDummyPrefix,
                _spm.RemoveExtraWhitespaces, _spm.EscapeWhitespaces);
            if (normalized.Length > 0) body.AddRange(_model.Encode(normalized));
        }
        else
        {
            bool atStart = true;
            foreach (var (part, id) in _special.Split(text, normalized: false))
            {
                if (id >= 0) { body.Add(id); atStart = false; continue; }
                foreach (var (normalizedPart, normalizedId) in _special.Split(_pipeline.Normalize(part), normalized: true))
                {
                    if (normalizedId >= 0) body.Add(normalizedId);
                    else foreach (string piece in _pipeline.PreTokenize(normalizedPart, atStart)) body.AddRange(_model.Encode(piece));
                    atStart = false;
                }
            }
        }
        return TokenLayout.Build(body, [], [EosTokenId], maxLength, PadTokenId, padToMaxLength, truncate);
    }

    /// <inheritdoc />
    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            if (_specialIds.Contains(id) || !_idToToken.TryGetValue(id, out string? piece)) continue;
            sb.Append(piece);
        }
        return sb.ToString().Replace('\u2581', ' ').Trim();
    }
}
