namespace DiffusersSharp.Tokenizers;

/// <summary>A token added to the vocabulary (special tokens, textual inversion tokens), with the tokenizers library's flags.</summary>
/// <param name="Content">The text of the token.</param>
/// <param name="Id">Its id.</param>
/// <param name="Normalized">Matched in the normalised text instead of the raw text.</param>
/// <param name="LStrip">A match also takes the whitespace before it.</param>
/// <param name="RStrip">A match also takes the whitespace after it.</param>
/// <param name="Special">A special token (left out when decoding); <c>add_tokens</c> adds non-special ones.</param>
/// <param name="Pattern">What is matched, when not <paramref name="Content"/>: the tokenizers library matches a normalized
/// token by its content passed through the normaliser (CLIP: lower case), so "&lt;Cat&gt;" is found as "&lt;cat&gt;".</param>
internal readonly record struct AddedToken(string Content, int Id, bool Normalized = false, bool LStrip = false, bool RStrip = false,
    bool Special = true, string? Pattern = null)
{
    /// <summary>The text looked for in the (raw or normalised) text.</summary>
    public string Match => Pattern ?? Content;
}

/// <summary>
/// Finds added tokens written inside the text, as the tokenizers library does: tokens with <c>normalized: false</c> in
/// the raw text, then the others in each normalised stretch between them; leftmost match first, the longest token among
/// those starting there. A match is returned as the text it matched (the token's <see cref="AddedToken.Match"/>).
/// </summary>
internal sealed class SpecialTokenSplitter
{
    private readonly AddedToken[] _tokens;

    public SpecialTokenSplitter(IEnumerable<AddedToken> tokens)
    {
        // First definition of a content wins (tokenizer.json before the configs); longest first, so the first token
        // that matches at a position is the longest one there.
        _tokens = tokens.Where(t => t.Content.Length > 0 && t.Match.Length > 0).DistinctBy(t => t.Content)
            .OrderByDescending(t => t.Match.Length).ThenBy(t => t.Id).ToArray();
    }

    public IReadOnlyList<AddedToken> Tokens => _tokens;

    public bool TryGetId(string content, out int id)
    {
        foreach (var t in _tokens)
        {
            if (t.Content == content) { id = t.Id; return true; }
        }
        id = -1;
        return false;
    }

    /// <summary>Pieces of <paramref name="text"/> in order: plain text (Id = -1) and added tokens (the matched text, their id).</summary>
    /// <param name="text">The text to split.</param>
    /// <param name="normalized">Which tokens to look for: those matched in normalised text, or those matched in raw text.</param>
    public List<(string Text, int Id)> Split(string text, bool normalized)
    {
        var parts = new List<(string, int)>();
        int start = 0;
        for (int i = 0; i < text.Length;)
        {
            int found = -1;
            for (int k = 0; k < _tokens.Length; k++)
            {
                if (_tokens[k].Normalized == normalized && text.AsSpan(i).StartsWith(_tokens[k].Match, StringComparison.Ordinal))
                {
                    found = k;
                    break;
                }
            }
            if (found < 0) { i++; continue; }
            var token = _tokens[found];
            int matchStart = i, matchEnd = i + token.Match.Length;
            if (token.LStrip)
            {
                while (matchStart > start && char.IsWhiteSpace(text[matchStart - 1])) matchStart--;
            }
            if (token.RStrip)
            {
                while (matchEnd < text.Length && char.IsWhiteSpace(text[matchEnd])) matchEnd++;
            }
            if (matchStart > start) parts.Add((text[start..matchStart], -1));
            parts.Add((token.Match, token.Id));
            i = start = matchEnd;
        }
        if (start < text.Length) parts.Add((text[start..], -1));
        return parts;
    }
}

/// <summary>Truncation (keeping the special tokens) and padding, as transformers applies them.</summary>
internal static class TokenLayout
{
    public static TokenizedText Build(List<int> body, int[] prefix, int[] suffix, int maxLength, int padId, bool pad, bool truncate)
    {
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "maxLength must be at least 1.");
        int specials = prefix.Length + suffix.Length;
        if (truncate && maxLength < specials)
            throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, $"maxLength must leave room for the {specials} special token(s) the tokenizer adds.");
        int untruncated = body.Count + specials;
        int keep = truncate ? Math.Min(body.Count, maxLength - specials) : body.Count;
        int[] dropped = body.Skip(keep).ToArray();
        var ids = new List<int>(Math.Max(maxLength, keep + specials));
        ids.AddRange(prefix);
        ids.AddRange(body.Take(keep));
        ids.AddRange(suffix);
        if (pad)
        {
            while (ids.Count < maxLength) ids.Add(padId);
        }
        return new TokenizedText(ids.ToArray(), untruncated, dropped);
    }

    /// <summary>
    /// transformers' <c>tokenizer(texts, padding="max_length", max_length=maxLength, truncation=truncate)</c> from each
    /// text's unpadded encoding (<paramref name="encode"/>: special tokens added, cut when truncating): the rows padded
    /// with <paramref name="padId"/> on <paramref name="side"/>, the attention mask 1 on the ids and 0 on the padding.
    /// </summary>
    /// <exception cref="ArgumentException">No text, or a text longer than <paramref name="maxLength"/> ids with truncation off.</exception>
    public static TokenizedBatch Batch(IReadOnlyList<string> texts, Func<string, TokenizedText> encode, int maxLength, int padId, PaddingSide side)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (texts.Count == 0) throw new ArgumentException("At least one text is needed.", nameof(texts));
        var rows = new List<TokenizedText>(texts.Count);
        foreach (string text in texts)
        {
            ArgumentNullException.ThrowIfNull(text, nameof(texts));
            var row = encode(text);
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
                ids[i * maxLength + j] = real ? row[k] : padId;
                mask[i * maxLength + j] = real ? 1 : 0;
            }
        }
        return new TokenizedBatch(ids, mask, rows.Select(r => r.Ids.Length).ToArray(), rows.Select(r => r.UntruncatedLength).ToArray(), maxLength);
    }
}
