using System.Text.Json;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// Llama's tokenizer (transformers' <c>LlamaTokenizerFast</c>; AuraFlow's pile-t5 tokenizer), giving the ids of the
/// tokenizers library's <c>tokenizer.json</c> in the two layouts transformers' LlamaConverter writes: the legacy one
/// (normaliser Prepend("▁") + Replace(" " -> "▁"), no pre-tokenizer: "▁" before every stretch of text, also after an
/// added token) and the newer one (no normaliser, pre-tokenizer Metaspace("▁", prepend_scheme "first", split false):
/// "▁" only before the text that starts the input). Added tokens written in the text are matched first; the rest is
/// character BPE with byte fallback (<see cref="CharBpeModel"/>). The special tokens around the text are the
/// post-processor's, as transformers sets them: from tokenizer_config.json's add_bos_token / add_eos_token when it gives
/// either (LlamaTokenizerFast rebuilds its TemplateProcessing from them, defaults true / false), otherwise the file's own
/// TemplateProcessing. Truncation keeps them; padding uses the pad token the configs name.
/// </summary>
public sealed class LlamaTokenizer : ITextTokenizer
{
    private readonly SentencePieceBpe _model;
    private readonly int[] _prefix;
    private readonly int[] _suffix;

    private LlamaTokenizer(SentencePieceBpe model, int[] prefix, int[] suffix, int bos, int eos, int? pad, int unk, int maxLength,
        PaddingSide paddingSide)
    {
        _model = model;
        _prefix = prefix;
        _suffix = suffix;
        BosTokenId = bos;
        EosTokenId = eos;
        PadToken = pad;
        UnkTokenId = unk;
        ModelMaxLength = maxLength;
        PaddingSide = paddingSide;
        VocabSize = model.VocabSize;
    }

    /// <inheritdoc />
    /// <remarks>From tokenizer_config.json; <see cref="int.MaxValue"/> when it gives none or transformers' 1e30 ("no
    /// limit", as AuraFlow's): pipelines then pass their own max_length (AuraFlow: max_sequence_length, 256).</remarks>
    public int ModelMaxLength { get; }

    /// <summary>The pad token's id, or null when the configs name none (Llama's own tokenizer has none; AuraFlow's has <c>&lt;pad&gt;</c>).</summary>
    public int? PadToken { get; }

    /// <inheritdoc />
    /// <exception cref="InvalidOperationException">The tokenizer has no pad token.</exception>
    public int PadTokenId => PadToken ?? throw new InvalidOperationException(NoPad);

    /// <inheritdoc />
    /// <remarks><c>&lt;/s&gt;</c> in Llama, put after the text when the post-processor says so (<see cref="AddEosToken"/>).</remarks>
    public int EosTokenId { get; }

    /// <summary><c>&lt;s&gt;</c> in Llama, put in front of the text when the post-processor says so (<see cref="AddBosToken"/>).</summary>
    public int BosTokenId { get; }

    /// <summary><c>&lt;unk&gt;</c> in Llama (only for characters byte fallback cannot write).</summary>
    public int UnkTokenId { get; }

    /// <summary>Whether encodings start with <c>&lt;s&gt;</c>.</summary>
    public bool AddBosToken => _prefix.Contains(BosTokenId);

    /// <summary>Whether encodings end with <c>&lt;/s&gt;</c>.</summary>
    public bool AddEosToken => _suffix.Contains(EosTokenId);

    /// <summary>The ids put in front of every text (add_special_tokens = true).</summary>
    public IReadOnlyList<int> PrefixIds => _prefix;

    /// <summary>The ids put after every text (add_special_tokens = true).</summary>
    public IReadOnlyList<int> SuffixIds => _suffix;

    /// <summary>tokenizer_config.json's padding_side; left when not given (LlamaTokenizerFast's class default).</summary>
    public PaddingSide PaddingSide { get; }

    /// <inheritdoc />
    public int VocabSize { get; }

    private const string NoPad = "This Llama tokenizer has no pad token (tokenizer_config.json / special_tokens_map.json name none), so it cannot pad; transformers refuses padding too.";

    /// <summary>The id of an added token or of a vocabulary piece, or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return _model.TryGetId(token, out int id) ? id : null;
    }

    /// <summary>The piece (or added token) of <paramref name="id"/>, or null.</summary>
    public string? IdToToken(int id) => _model.IdToToken(id);

    /// <summary>
    /// Loads a Llama tokenizer folder: <c>tokenizer.json</c> (BPE vocabulary and merges, normaliser, pre-tokenizer,
    /// post-processor, added tokens) and the optional <c>tokenizer_config.json</c> / <c>special_tokens_map.json</c>
    /// (bos / eos / pad / unk tokens, add_bos_token, add_eos_token, model_max_length, padding_side,
    /// added_tokens_decoder). <c>tokenizer.model</c> (SentencePiece) is not read.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">tokenizer.json is not there.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed (not JSON, missing model / vocab / merges, a
    /// merge naming pieces not in the vocabulary, a special token unknown, a malformed TemplateProcessing, an unknown
    /// padding_side); the message names the file.</exception>
    /// <exception cref="NotSupportedException">tokenizer.json describes another pipeline (a model other than BPE, a
    /// normaliser other than Prepend / Replace / Precompiled / Sequence, a pre-tokenizer other than none / Metaspace, a
    /// post-processor other than none / TemplateProcessing, BPE dropout or subword prefixes / suffixes), or
    /// tokenizer_config.json asks for split_special_tokens or sets add_prefix_space (transformers then rebuilds the
    /// tokenizer from tokenizer.model).</exception>
    public static LlamaTokenizer FromFolder(string folder)
    {
        TokenizerFiles.RequireFolder(folder);
        string jsonPath = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(jsonPath))
            throw new FileNotFoundException($"Llama tokenizer file not found: {jsonPath} (DiffusersSharp reads tokenizer.json, not tokenizer.model).", jsonPath);
        var config = TokenizerConfig.Read(folder);
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        if (config.SplitSpecialTokens)
            throw new NotSupportedException($"{configPath}: split_special_tokens = true is not supported by DiffusersSharp (Llama matches its special tokens).");
        if (config.AddPrefixSpace is not null)
            throw new NotSupportedException($"{configPath}: add_prefix_space is set, for which transformers' LlamaTokenizerFast rebuilds the tokenizer from tokenizer.model (from_slow); DiffusersSharp reads tokenizer.json only.");

        using var doc = TokenizerFiles.ReadJson(jsonPath);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{jsonPath}: expected a JSON object.");
        var model = SentencePieceBpe.Read(root, jsonPath, config, r => ReadPreTokenizer(r, jsonPath));
        string what = $"Llama tokenizer in {folder}";
        int bos = model.SpecialId(config, "bos_token", "<s>", what);
        int eos = model.SpecialId(config, "eos_token", "</s>", what);
        int unk = model.SpecialId(config, "unk_token", "<unk>", what);
        int? pad = config.Token("pad_token") is null ? null : model.SpecialId(config, "pad_token", "", what);

        int[] prefix, suffix;
        if (config.AddBosToken is not null || config.AddEosToken is not null)
        {
            // LlamaTokenizerFast.update_post_processor: [bos] $A [eos] from the config (defaults true / false).
            prefix = config.AddBosToken ?? true ? [bos] : [];
            suffix = config.AddEosToken ?? false ? [eos] : [];
            ReadTemplate(root, jsonPath, model); // still refuse a post-processor of another kind
        }
        else
        {
            (prefix, suffix) = ReadTemplate(root, jsonPath, model);
        }
        var side = config.PaddingSide switch
        {
            null or "left" => PaddingSide.Left,
            "right" => PaddingSide.Right,
            var other => throw new InvalidDataException($"{configPath}: padding_side \"{other}\" is neither \"right\" nor \"left\"."),
        };
        return new LlamaTokenizer(model, prefix, suffix, bos, eos, pad, unk, config.ModelMaxLength ?? int.MaxValue, side);
    }

    /// <summary>None, or Metaspace (the newer layout; its replacement, prepend_scheme and split as the file gives them).</summary>
    private static SentencePieceBpe.PreTokenizer? ReadPreTokenizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind == JsonValueKind.Null) return null;
        string type = pre.ValueKind == JsonValueKind.Object && pre.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
        if (type != "Metaspace")
            throw new NotSupportedException($"{path}: pre_tokenizer \"{type}\" is not supported by DiffusersSharp's LlamaTokenizer (expected none or Metaspace).");
        var metaspace = MetaspacePipeline.MetaspaceOnly(pre, path);
        return metaspace.PreTokenize;
    }

    /// <summary>
    /// The special ids the post-processor puts before and after a single text: TemplateProcessing's <c>single</c>
    /// (SpecialToken pieces around one Sequence $A, their ids from <c>special_tokens</c>), or nothing without a post-processor.
    /// </summary>
    private static (int[] Prefix, int[] Suffix) ReadTemplate(JsonElement root, string path, SentencePieceBpe model)
    {
        if (!root.TryGetProperty("post_processor", out var post) || post.ValueKind == JsonValueKind.Null) return ([], []);
        string type = post.ValueKind == JsonValueKind.Object && post.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
        if (type != "TemplateProcessing")
            throw new NotSupportedException($"{path}: post_processor \"{type}\" is not supported by DiffusersSharp's LlamaTokenizer (expected none or TemplateProcessing).");
        var single = TokenizerFiles.Require(post, "single", JsonValueKind.Array, path);
        post.TryGetProperty("special_tokens", out var specials);
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool sequenceSeen = false;
        foreach (var piece in single.EnumerateArray())
        {
            if (piece.ValueKind == JsonValueKind.Object && piece.TryGetProperty("Sequence", out var seq))
            {
                if (sequenceSeen || !(seq.TryGetProperty("id", out var sid) && sid.GetString() == "A"))
                    throw new InvalidDataException($"{path}: post_processor.single must hold the sequence $A once.");
                sequenceSeen = true;
                continue;
            }
            if (piece.ValueKind != JsonValueKind.Object || !piece.TryGetProperty("SpecialToken", out var special)
                || !special.TryGetProperty("id", out var name) || name.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{path}: post_processor.single holds a piece that is neither a SpecialToken nor a Sequence.");
            string token = name.GetString()!;
            int[] ids;
            if (specials.ValueKind == JsonValueKind.Object && specials.TryGetProperty(token, out var entry)
                && entry.TryGetProperty("ids", out var idArray) && idArray.ValueKind == JsonValueKind.Array)
                ids = idArray.EnumerateArray().Select(i => i.GetInt32()).ToArray();
            else if (model.TryGetId(token, out int id))
                ids = [id];
            else throw new InvalidDataException($"{path}: post_processor names the special token '{token}', which has no ids.");
            (sequenceSeen ? suffix : prefix).AddRange(ids);
        }
        if (!sequenceSeen) throw new InvalidDataException($"{path}: post_processor.single has no sequence $A.");
        return (prefix.ToArray(), suffix.ToArray());
    }

    /// <summary>
    /// transformers' <c>tokenizer.encode(text)</c> (add_special_tokens=True): the post-processor's special tokens around
    /// the text's ids, no truncation or padding. With <paramref name="addSpecialTokens"/> false, the text's ids alone.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var body = _model.TextIds(text);
        if (!addSpecialTokens) return body;
        return [.. _prefix, .. body, .. _suffix];
    }

    /// <inheritdoc />
    /// <remarks>The special tokens (<see cref="PrefixIds"/>, <see cref="SuffixIds"/>) around the text's ids, cut to leave
    /// room for them, then the pad token on the right.</remarks>
    /// <exception cref="InvalidOperationException"><paramref name="padToMaxLength"/> is set and the tokenizer has no pad token.</exception>
    public TokenizedText Encode(string text, int maxLength, bool padToMaxLength = true, bool truncate = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (padToMaxLength && PadToken is null) throw new InvalidOperationException(NoPad);
        return TokenLayout.Build(_model.TextIds(text), _prefix, _suffix, maxLength, PadToken ?? -1, padToMaxLength, truncate);
    }

    /// <summary>
    /// transformers' <c>tokenizer(texts, padding="max_length", max_length=maxLength, truncation=truncate,
    /// add_special_tokens=True, return_attention_mask=True)</c>, as AuraFlowPipeline calls it (maxLength 256): each text
    /// encoded with the special tokens, cut to <paramref name="maxLength"/> ids (keeping them), padded with the pad token
    /// on <paramref name="paddingSide"/> (default <see cref="PaddingSide"/>), the attention mask 1 on the ids and 0 on the padding.
    /// </summary>
    /// <exception cref="InvalidOperationException">The tokenizer has no pad token.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxLength"/> is below 1 or cannot hold the special tokens.</exception>
    /// <exception cref="ArgumentException">No text, or a text longer than <paramref name="maxLength"/> ids with <paramref name="truncate"/> false.</exception>
    public TokenizedBatch EncodeBatch(IReadOnlyList<string> texts, int maxLength, bool truncate = true, PaddingSide? paddingSide = null)
    {
        if (PadToken is not int pad) throw new InvalidOperationException(NoPad);
        return TokenLayout.Batch(texts, text => Encode(text, maxLength, padToMaxLength: false, truncate), maxLength, pad, paddingSide ?? PaddingSide);
    }

    /// <summary>transformers' <c>tokenize(text)</c>: the pieces of the text (no special tokens added), added tokens as written.</summary>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _model.Pieces(_model.TextIds(text));
    }

    /// <inheritdoc />
    /// <remarks>"▁" back to spaces, byte pieces as UTF-8, special tokens left out (the leading space the legacy layout
    /// adds is kept: this is for showing what truncation cut).</remarks>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return _model.Decode(ids);
    }
}
