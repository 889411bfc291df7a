namespace DiffusersSharp.Tokenizers;

/// <summary>
/// Finds special tokens written inside the text, as the tokenizers library does before normalisation for added tokens
/// with <c>normalized: false</c>: leftmost match first, the longest token among those starting there.
/// </summary>
internal sealed class SpecialTokenSplitter
{
    private readonly (string Content, int Id)[] _tokens;

    public SpecialTokenSplitter(IEnumerable<(string Content, int Id)> tokens)
    {
        // Longest first, so the first token that matches at a position is the longest one there.
        _tokens = tokens.Where(t => t.Content.Length > 0).DistinctBy(t => t.Content)
            .OrderByDescending(t => t.Content.Length).ThenBy(t => t.Content, StringComparer.Ordinal).ToArray();
    }

    public IReadOnlyList<(string Content, int Id)> Tokens => _tokens;

    public bool TryGetId(string content, out int id)
    {
        foreach (var t in _tokens)
        {
            if (t.Content == content) { id = t.Id; return true; }
        }
        id = -1;
        return false;
    }

    /// <summary>Pieces of <paramref name="text"/> in order: plain text (Id = -1) and special tokens (their id).</summary>
    public List<(string Text, int Id)> Split(string text)
    {
        var parts = new List<(string, int)>();
        int start = 0;
        for (int i = 0; i < text.Length;)
        {
            int found = -1;
            for (int k = 0; k < _tokens.Length; k++)
            {
                if (text.AsSpan(i).StartsWith(_tokens[k].Content, StringComparison.Ordinal))
                {
                    found = k;
                    break;
                }
            }
            if (found < 0) { i++; continue; }
            if (i > start) parts.Add((text[start..i], -1));
            parts.Add((_tokens[found].Content, _tokens[found].Id));
            i += _tokens[found].Content.Length;
            start = i;
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
}
