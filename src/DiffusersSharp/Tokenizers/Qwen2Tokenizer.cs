using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// Qwen2's byte-level BPE tokenizer (Qwen2 / Qwen2.5 / Qwen3; Z-Image's <c>Qwen2Tokenizer</c>), giving the ids of the
/// tokenizers library's <c>tokenizer.json</c>: added tokens written in the text (<c>&lt;|im_start|&gt;</c>,
/// <c>&lt;|endoftext|&gt;</c>, <c>&lt;think&gt;</c>, ...) are matched first, leftmost and longest; the rest is
/// NFC-normalised, split with Qwen2's pattern (<see cref="Qwen2PreTokenizer"/>: letters with one leading non-letter,
/// single digits, punctuation runs, newline and space runs) and each piece is BPE-encoded over its UTF-8 bytes
/// (Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>). No BOS / EOS is added; padding (on the right, with the pad
/// token) and truncation as transformers' <c>padding="max_length", truncation=True</c>.
/// </summary>
public sealed class Qwen2Tokenizer : ITextTokenizer
{
    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly bool _ignoreMerges;
    private readonly SpecialTokenSplitter _added;
    private readonly Dictionary<int, string> _idToToken = new();
    private readonly Dictionary<int, AddedToken> _addedById;

    private Qwen2Tokenizer(BpeTokenizer bpe, Dictionary<string, int> vocab, bool ignoreMerges, List<AddedToken> added,
        int pad, int eos, int maxLength)
    {
        _bpe = bpe;
        _vocab = vocab;
        _ignoreMerges = ignoreMerges;
        _added = new SpecialTokenSplitter(added);
        _addedById = _added.Tokens.GroupBy(t => t.Id).ToDictionary(g => g.Key, g => g.First());
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        foreach (var t in _added.Tokens) _idToToken[t.Id] = t.Content;
        PadTokenId = pad;
        EosTokenId = eos;
        ModelMaxLength = maxLength;
        VocabSize = _idToToken.Keys.Max() + 1;
    }

    /// <inheritdoc />
    /// <remarks>From tokenizer_config.json (Qwen3: 131072); 32768 when the file does not say.</remarks>
    public int ModelMaxLength { get; }

    /// <inheritdoc />
    /// <remarks>Qwen's pad token is <c>&lt;|endoftext|&gt;</c>.</remarks>
    public int PadTokenId { get; }

    /// <inheritdoc />
    /// <remarks>tokenizer_config.json's eos_token (Qwen3: <c>&lt;|im_end|&gt;</c>); never added by <see cref="Encode"/>.</remarks>
    public int EosTokenId { get; }

    /// <inheritdoc />
    public int VocabSize { get; }

    /// <summary>The id of an added token (<c>&lt;|im_start|&gt;</c>, ...) or of a vocabulary token, or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_added.TryGetId(token, out int id)) return id;
        return _vocab.TryGetValue(token, out id) ? id : null;
    }

    /// <summary>
    /// Loads a Qwen2 tokenizer folder: <c>tokenizer.json</c> when present (vocabulary, merges and added tokens), else
    /// <c>vocab.json</c> + <c>merges.txt</c> with the added tokens of tokenizer_config.json's <c>added_tokens_decoder</c>;
    /// pad / eos tokens and <c>model_max_length</c> from tokenizer_config.json.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">Neither tokenizer.json nor vocab.json + merges.txt is there.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed, or the pad token is unknown (the message names it).</exception>
    /// <exception cref="NotSupportedException">tokenizer.json describes another pipeline than Qwen2's (normaliser,
    /// pre-tokenizer or BPE options), or tokenizer_config.json asks for split_special_tokens.</exception>
    public static Qwen2Tokenizer FromFolder(string folder) => Load(folder, preferTokenizerJson: true);

    internal static Qwen2Tokenizer Load(string folder, bool preferTokenizerJson)
    {
        TokenizerFiles.RequireFolder(folder);
        string jsonPath = Path.Combine(folder, "tokenizer.json");
        string vocabPath = Path.Combine(folder, "vocab.json");
        string mergesPath = Path.Combine(folder, "merges.txt");
        bool useJson = File.Exists(jsonPath) && (preferTokenizerJson || !File.Exists(vocabPath));
        if (!useJson && !(File.Exists(vocabPath) && File.Exists(mergesPath)))
            throw new FileNotFoundException($"Qwen2 tokenizer files not found in {folder}: expected tokenizer.json or vocab.json + merges.txt.", jsonPath);

        var config = TokenizerConfig.Read(folder);
        Dictionary<string, int> vocab;
        List<string> merges;
        bool ignoreMerges = false;
        var added = new List<AddedToken>();
        if (useJson)
        {
            using var doc = TokenizerFiles.ReadJson(jsonPath);
            var root = doc.RootElement;
            CheckPipeline(root, jsonPath);
            var model = TokenizerFiles.Require(root, "model", JsonValueKind.Object, jsonPath);
            vocab = TokenizerFiles.ReadVocab(TokenizerFiles.Require(model, "vocab", JsonValueKind.Object, jsonPath), jsonPath);
            merges = TokenizerFiles.ReadJsonMerges(TokenizerFiles.Require(model, "merges", JsonValueKind.Array, jsonPath), jsonPath);
            ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
            added.AddRange(TokenizerFiles.AddedTokens(root, jsonPath));
        }
        else
        {
            using (var doc = TokenizerFiles.ReadJson(vocabPath))
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{vocabPath}: expected a JSON object token -> id.");
                vocab = TokenizerFiles.ReadVocab(doc.RootElement, vocabPath);
            }
            merges = TokenizerFiles.ReadMergesFile(mergesPath);
        }
        // tokenizer_config.json's added_tokens_decoder: what the slow files lack (tokenizer.json's own come first).
        added.AddRange(config.AddedTokensDecoder);
        if (config.SplitSpecialTokens)
            throw new NotSupportedException($"{folder}: split_special_tokens = true is not supported by DiffusersSharp (Qwen matches its special tokens).");

        string pad = config.Token("pad_token") ?? "<|endoftext|>";
        string eos = config.Token("eos_token") ?? "<|endoftext|>";
        var splitter = new SpecialTokenSplitter(added);
        int Id(string token, string role)
        {
            if (splitter.TryGetId(token, out int id) || vocab.TryGetValue(token, out id)) return id;
            throw new InvalidDataException($"Qwen2 tokenizer in {folder}: the {role} '{token}' is neither an added token nor in the vocabulary.");
        }
        int padId = Id(pad, "pad_token"), eosId = Id(eos, "eos_token");

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab) { Merges = merges, ByteLevel = true });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"Qwen2 tokenizer in {folder}: vocabulary or merges rejected: {e.Message}", e);
        }
        return new Qwen2Tokenizer(bpe, vocab, ignoreMerges, added, padId, eosId, config.ModelMaxLength ?? 32768);
    }

    /// <summary>Refuses a tokenizer.json whose normaliser, pre-tokenizer or BPE options are not Qwen2's.</summary>
    private static void CheckPipeline(JsonElement root, string path)
    {
        void Refuse(string what) =>
            throw new NotSupportedException($"{path}: {what} is not Qwen2's; DiffusersSharp's Qwen2Tokenizer implements only Qwen2's pipeline.");
        static string? Str(JsonElement e, string name) =>
            e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        static bool Flag(JsonElement e, string name) =>
            e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind != JsonValueKind.Null && Str(norm, "type") != "NFC")
            Refuse("the normalizer");
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || Str(pre, "type") != "Sequence"
            || !pre.TryGetProperty("pretokenizers", out var steps) || steps.ValueKind != JsonValueKind.Array || steps.GetArrayLength() != 2)
        {
            Refuse("the pre_tokenizer");
            return;
        }
        var split = steps[0];
        var byteLevel = steps[1];
        string? regex = split.TryGetProperty("pattern", out var pattern) ? Str(pattern, "Regex") : null;
        if (Str(split, "type") != "Split" || regex != Qwen2PreTokenizer.Pattern || Str(split, "behavior") != "Isolated" || Flag(split, "invert"))
            Refuse("the pre_tokenizer's Split step");
        if (Str(byteLevel, "type") != "ByteLevel" || Flag(byteLevel, "add_prefix_space") || Flag(byteLevel, "use_regex"))
            Refuse("the pre_tokenizer's ByteLevel step");
        var model = TokenizerFiles.Require(root, "model", JsonValueKind.Object, path);
        if (Str(model, "type") is { } type && type != "BPE") Refuse($"the model type '{type}'");
        if (Flag(model, "byte_fallback") || !string.IsNullOrEmpty(Str(model, "continuing_subword_prefix"))
            || !string.IsNullOrEmpty(Str(model, "end_of_word_suffix")))
            Refuse("the BPE options (byte_fallback / continuing_subword_prefix / end_of_word_suffix)");
    }

    /// <summary>transformers' <c>tokenizer(text, add_special_tokens=...)["input_ids"]</c> without padding: the text's ids.</summary>
    public IReadOnlyList<int> EncodeToIds(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Pieces(text).Select(p => p.Id).ToList();
    }

    /// <inheritdoc />
    /// <remarks>No special tokens are added: the ids are the text's, cut to <paramref name="maxLength"/> and padded on the
    /// right. The attention mask is 1 on the first <c>min(UntruncatedLength, maxLength)</c> ids and 0 on the padding.</remarks>
    public TokenizedText Encode(string text, int maxLength, bool padToMaxLength = true, bool truncate = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var body = Pieces(text).Select(p => p.Id).ToList();
        return TokenLayout.Build(body, [], [], maxLength, PadTokenId, padToMaxLength, truncate);
    }

    /// <summary>transformers' <c>tokenize(text)</c>: byte-level BPE pieces as vocabulary strings, added tokens as written.</summary>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Pieces(text).Select(p => p.Token).ToList();
    }

    /// <summary>Added tokens matched in the raw text (then those matched in normalised text), and BPE pieces, in order.</summary>
    private IEnumerable<(string Token, int Id)> Pieces(string text)
    {
        foreach (var (part, id) in _added.Split(text, normalized: false))
        {
            if (id >= 0) { yield return (part, id); continue; }
            foreach (var (normalizedPart, normalizedId) in _added.Split(UnicodeNfc.Normalize(part), normalized: true))
            {
                if (normalizedId >= 0) { yield return (normalizedPart, normalizedId); continue; }
                foreach (string word in Qwen2PreTokenizer.Split(normalizedPart))
                {
                    if (_ignoreMerges && _vocab.TryGetValue(ByteLevel.Encode(word), out int whole))
                    {
                        yield return (_idToToken[whole], whole);
                        continue;
                    }
                    foreach (int bpeId in _bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false))
                        yield return (_idToToken.GetValueOrDefault(bpeId, ""), bpeId);
                }
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>Special added tokens are left out; other added tokens (<c>&lt;think&gt;</c>, ...) are kept as written.</remarks>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new StringBuilder();
        var bytes = new StringBuilder();
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var token))
            {
                sb.Append(ByteLevel.Decode(bytes.ToString()));
                bytes.Clear();
                if (!token.Special) sb.Append(token.Content);
                continue;
            }
            if (_idToToken.TryGetValue(id, out string? piece)) bytes.Append(piece);
        }
        sb.Append(ByteLevel.Decode(bytes.ToString()));
        return sb.ToString();
    }
}
