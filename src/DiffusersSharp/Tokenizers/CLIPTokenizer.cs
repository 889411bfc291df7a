using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace DiffusersSharp.Tokenizers;

/// <summary>
/// CLIP's byte-level BPE tokenizer, giving the ids of transformers' <c>CLIPTokenizer</c> (tokenizers backend):
/// special tokens written in the text are matched first; the rest is NFC-normalised, whitespace runs become one space,
/// lower-cased, split with CLIP's pattern, and each word is BPE-encoded with an end-of-word <c>&lt;/w&gt;</c>
/// (Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>). Then <c>BOS ... EOS</c>, truncation and padding.
/// No HTML unescaping or ftfy: the tokenizers backend does neither.
/// </summary>
public sealed class CLIPTokenizer : ITextTokenizer
{
    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly bool _lowerCase;
    // Added tokens (special ones from the tokenizer files, then those add_tokens adds) and what is derived from them;
    // replaced together by SetAddedTokens.
    private List<AddedToken> _added;
    private SpecialTokenSplitter _special;
    private Dictionary<int, string> _idToToken;
    private HashSet<int> _specialIds;

    private CLIPTokenizer(BpeTokenizer bpe, Dictionary<string, int> vocab, SpecialTokenSplitter special, bool lowerCase,
        int bos, int eos, int pad, int maxLength)
    {
        _bpe = bpe;
        _vocab = vocab;
        _lowerCase = lowerCase;
        BosTokenId = bos;
        EosTokenId = eos;
        PadTokenId = pad;
        ModelMaxLength = maxLength;
        _added = special.Tokens.ToList();
        _special = special;
        _idToToken = new Dictionary<int, string>();
        _specialIds = new HashSet<int>();
        SetAddedTokens(_added);
    }

    /// <inheritdoc />
    public int ModelMaxLength { get; }

    /// <inheritdoc />
    public int PadTokenId { get; }

    /// <inheritdoc />
    public int EosTokenId { get; }

    /// <summary>Id of <c>&lt;|startoftext|&gt;</c>, written first.</summary>
    public int BosTokenId { get; }

    /// <inheritdoc />
    /// <remarks>transformers' <c>len(tokenizer)</c>: it grows with the tokens textual inversion adds.</remarks>
    public int VocabSize { get; private set; }

    /// <summary>
    /// transformers' <c>added_tokens_encoder</c>: every added token (the special ones and those textual inversion adds)
    /// by its content, in id order.
    /// </summary>
    public IReadOnlyDictionary<string, int> AddedTokensEncoder =>
        _added.OrderBy(t => t.Id).DistinctBy(t => t.Content).ToDictionary(t => t.Content, t => t.Id, StringComparer.Ordinal);

    /// <summary>Whether <paramref name="token"/> is in transformers' <c>get_vocab()</c>: the BPE vocabulary or an added token.</summary>
    public bool ContainsToken(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return _vocab.ContainsKey(token) || _added.Any(t => t.Content == token);
    }

    /// <summary>The added tokens, specials included (for textual inversion's bookkeeping).</summary>
    internal IReadOnlyList<AddedToken> AddedTokens => _added;

    /// <summary>
    /// transformers' <c>add_tokens(content)</c> (tokenizers backend) for a token not in the vocabulary: a non-special token
    /// matched in the normalised text (so, as CLIP lower-cases, in any case), never split by BPE, with the next free id
    /// (<see cref="VocabSize"/>). Returns that id.
    /// </summary>
    internal int AddToken(string content)
    {
        ArgumentException.ThrowIfNullOrEmpty(content);
        if (ContainsToken(content)) throw new InvalidOperationException($"'{content}' is already in the tokenizer's vocabulary.");
        int id = NextTokenId;
        SetAddedTokens([.. _added, new AddedToken(content, id, Normalized: true, Special: false)]);
        return id;
    }

    /// <summary>The id <see cref="AddToken"/> gives next: as the tokenizers library, the vocabulary's size, or one past the
    /// highest added id when that is higher.</summary>
    internal int NextTokenId => Math.Max(_vocab.Count, _added.Count == 0 ? 0 : _added.Max(t => t.Id) + 1);

    /// <summary>Replaces the added tokens (textual inversion's unload renumbers the ones it keeps).</summary>
    internal void SetAddedTokens(IReadOnlyList<AddedToken> tokens)
    {
        // A normalized token is matched by its normalised content, as the tokenizers library builds its pattern.
        var added = tokens.Select(t => t.Normalized ? t with { Pattern = Normalize(t.Content) } : t).ToList();
        var idToToken = new Dictionary<int, string>();
        foreach (var (token, id) in _vocab) idToToken[id] = token;
        foreach (var t in added) idToToken[t.Id] = t.Content;
        _added = added;
        _special = new SpecialTokenSplitter(added);
        _idToToken = idToToken;
        _specialIds = added.Where(t => t.Special).Select(t => t.Id).ToHashSet();
        VocabSize = idToToken.Count == 0 ? 0 : idToToken.Keys.Max() + 1;
    }

    /// <summary>
    /// Loads a CLIP tokenizer folder: <c>vocab.json</c> + <c>merges.txt</c>, or <c>tokenizer.json</c> when vocab.json is
    /// absent; special tokens, pad token and <c>model_max_length</c> from tokenizer_config.json / special_tokens_map.json.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">Neither vocab.json + merges.txt nor tokenizer.json is there.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed (the message names it).</exception>
    public static CLIPTokenizer FromFolder(string folder) => Load(folder, preferTokenizerJson: false);

    internal static CLIPTokenizer Load(string folder, bool preferTokenizerJson)
    {
        TokenizerFiles.RequireFolder(folder);
        string vocabPath = Path.Combine(folder, "vocab.json");
        string mergesPath = Path.Combine(folder, "merges.txt");
        string jsonPath = Path.Combine(folder, "tokenizer.json");
        bool useJson = File.Exists(jsonPath) && (preferTokenizerJson || !File.Exists(vocabPath));
        if (!useJson && !File.Exists(vocabPath))
            throw new FileNotFoundException($"CLIP tokenizer files not found in {folder}: expected vocab.json + merges.txt or tokenizer.json.", vocabPath);

        Dictionary<string, int> vocab;
        List<string> merges;
        bool? jsonLowerCase = null;
        var added = new List<AddedToken>();
        if (File.Exists(jsonPath))
        {
            using var doc = TokenizerFiles.ReadJson(jsonPath);
            added.AddRange(TokenizerFiles.AddedTokens(doc.RootElement, jsonPath));
        }
        if (useJson)
        {
            using var doc = TokenizerFiles.ReadJson(jsonPath);
            var model = TokenizerFiles.Require(doc.RootElement, "model", JsonValueKind.Object, jsonPath);
            if (model.TryGetProperty("type", out var type) && type.GetString() is { } t && t != "BPE")
                throw new InvalidDataException($"{jsonPath}: model type is \"{t}\", a CLIP tokenizer needs \"BPE\".");
            vocab = TokenizerFiles.ReadVocab(TokenizerFiles.Require(model, "vocab", JsonValueKind.Object, jsonPath), jsonPath);
            merges = TokenizerFiles.ReadJsonMerges(TokenizerFiles.Require(model, "merges", JsonValueKind.Array, jsonPath), jsonPath);
            if (doc.RootElement.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object)
                jsonLowerCase = norm.GetRawText().Contains("\"Lowercase\"", StringComparison.Ordinal);
        }
        else
        {
            if (!File.Exists(mergesPath)) throw new FileNotFoundException($"CLIP tokenizer file not found: {mergesPath}", mergesPath);
            using (var doc = TokenizerFiles.ReadJson(vocabPath))
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{vocabPath}: expected a JSON object token -> id.");
                vocab = TokenizerFiles.ReadVocab(doc.RootElement, vocabPath);
            }
            merges = TokenizerFiles.ReadMergesFile(mergesPath);
        }

        var config = TokenizerConfig.Read(folder);
        string bos = config.Token("bos_token") ?? "<|startoftext|>";
        string eos = config.Token("eos_token") ?? "<|endoftext|>";
        string pad = config.Token("pad_token") ?? "<|endoftext|>";
        string unk = config.Token("unk_token") ?? "<|endoftext|>";
        added.AddRange(config.AddedTokensDecoder);
        int nextId = Math.Max(vocab.Count == 0 ? 0 : vocab.Values.Max() + 1, added.Count == 0 ? 0 : added.Max(a => a.Id) + 1);
        foreach (string content in new[] { unk, bos, eos, pad }.Concat(config.AdditionalSpecialTokens))
        {
            if (added.Any(a => a.Content == content)) continue;
            added.Add(config.Special(content, vocab.TryGetValue(content, out int id) ? id : nextId++));
        }
        var special = new SpecialTokenSplitter(added);

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                EndOfWordSuffix = "</w>",
                ByteLevel = true,
                UnknownToken = vocab.ContainsKey(unk) ? unk : null,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"CLIP tokenizer in {folder}: vocabulary or merges rejected: {e.Message}", e);
        }
        special.TryGetId(bos, out int bosId);
        special.TryGetId(eos, out int eosId);
        special.TryGetId(pad, out int padId);
        return new CLIPTokenizer(bpe, vocab, special, jsonLowerCase ?? config.DoLowerCase ?? true, bosId, eosId, padId,
            config.ModelMaxLength ?? 77);
    }

    /// <inheritdoc />
    public TokenizedText Encode(string text, int maxLength, bool padToMaxLength = true, bool truncate = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var body = Pieces(text).Select(p => p.Id).ToList();
        return TokenLayout.Build(body, [BosTokenId], [EosTokenId], maxLength, PadTokenId, padToMaxLength, truncate);
    }

    /// <summary>
    /// transformers' <c>tokenize(text)</c>: the tokens of the text without BOS / EOS: BPE pieces as vocabulary strings
    /// (<c>"a&lt;/w&gt;"</c>), added tokens as the text they matched (for a normalized token, the normalised text).
    /// </summary>
    public IReadOnlyList<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Pieces(text).Select(p => p.Token).ToList();
    }

    /// <summary>Added tokens (raw text first, then normalised text) and BPE pieces, in order.</summary>
    private IEnumerable<(string Token, int Id)> Pieces(string text)
    {
        foreach (var (part, id) in _special.Split(text, normalized: false))
        {
            if (id >= 0) { yield return (part, id); continue; }
            foreach (var (normalizedPart, normalizedId) in _special.Split(Normalize(part), normalized: true))
            {
                if (normalizedId >= 0) { yield return (normalizedPart, normalizedId); continue; }
                foreach (string word in PreTokenize(normalizedPart))
                {
                    foreach (int bpeId in _bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false))
                        yield return (_idToToken.GetValueOrDefault(bpeId, ""), bpeId);
                }
            }
        }
    }

    /// <inheritdoc />
    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            if (_specialIds.Contains(id) || !_idToToken.TryGetValue(id, out string? token)) continue;
            sb.Append(token);
        }
        return ByteLevel.Decode(sb.ToString()).Replace("</w>", " ").Trim();
    }

    /// <summary>The tokenizers normaliser of CLIP: NFC, whitespace runs to one space, lower case.</summary>
    internal string Normalize(string text)
    {
        string nfc = UnicodeNfc.Normalize(text);
        var sb = new StringBuilder(nfc.Length);
        bool inSpace = false;
        foreach (Rune r in nfc.EnumerateRunes())
        {
            if (Rune.IsWhiteSpace(r))
            {
                if (!inSpace) sb.Append(' ');
                inSpace = true;
                continue;
            }
            inSpace = false;
            if (!_lowerCase) sb.Append(r.ToString());
            // Rust's char::to_lowercase (what tokenizers uses) is the full mapping; U+0130 is its only one-to-many case.
            else if (r.Value == 0x130) sb.Append("i\u0307");
            else sb.Append(Rune.ToLowerInvariant(r).ToString());
        }
        return sb.ToString();
    }

    /// <summary>
    /// CLIP's split pattern <c>&lt;|startoftext|&gt;|&lt;|endoftext|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
    /// applied per code point (a .NET Regex would see astral letters as surrogates); whitespace between matches is dropped.
    /// GPT-2's pattern, which the ByteLevel pre-tokenizer then applies to each piece, changes only the two special literals
    /// (they can appear here only after lower-casing, e.g. from "&lt;|ENDOFTEXT|&gt;"; written exactly they are special tokens).
    /// </summary>
    internal static List<string> PreTokenize(string text)
    {
        var words = new List<string>();
        int i = 0;
        while (i < text.Length)
        {
            if (StartsWithAny(text, i, out int special, "<|startoftext|>", "<|endoftext|>"))
            {
                // The ByteLevel step after the split applies GPT-2's pattern to each piece, which cuts this one in three.
                words.Add("<|");
                words.Add(text.Substring(i + 2, special - 4));
                words.Add("|>");
                i += special;
                continue;
            }
            if (text[i] == '\'' && StartsWithAny(text, i, out special, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"))
            {
                words.Add(text.Substring(i, special));
                i += special;
                continue;
            }
            var kind = Kind(text, i, out int len);
            if (kind == CharKind.Space) { i += len; continue; }
            int start = i;
            i += len;
            if (kind != CharKind.Number)
            {
                while (i < text.Length && Kind(text, i, out len) == kind) i += len;
            }
            words.Add(text[start..i]);
        }
        return words;
    }

    private enum CharKind { Letter, Number, Space, Other }

    private static CharKind Kind(string text, int i, out int length)
    {
        Rune.DecodeFromUtf16(text.AsSpan(i), out Rune r, out length);
        if (Rune.IsWhiteSpace(r)) return CharKind.Space;
        return Rune.GetUnicodeCategory(r) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => CharKind.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => CharKind.Number,
            _ => CharKind.Other,
        };
    }

    private static bool StartsWithAny(string text, int i, out int length, params string[] options)
    {
        foreach (string o in options)
        {
            if (text.AsSpan(i).StartsWith(o, StringComparison.Ordinal)) { length = o.Length; return true; }
        }
        length = 0;
        return false;
    }
}

/// <summary>GPT-2's byte-to-character table, used by byte-level BPE vocabularies.</summary>
internal static class ByteLevel
{
    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)(256 + extra++);
        }
        return table;
    }

    /// <summary>The byte-level characters of <paramref name="text"/>'s UTF-8 bytes.</summary>
    public static string Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>Text of a string of byte-level characters (characters outside the table are kept as they are).</summary>
    public static string Decode(string chars)
    {
        var bytes = new List<byte>(chars.Length);
        var sb = new StringBuilder();
        foreach (char c in chars)
        {
            if (CharToByte.TryGetValue(c, out byte b)) { bytes.Add(b); continue; }
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
            sb.Append(c);
        }
        sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
        return sb.ToString();
    }
}
