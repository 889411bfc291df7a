namespace DiffusersSharp.Tokenizers;

/// <summary>
/// A text tokenizer that gives the ids transformers gives when a diffusers pipeline calls it with
/// <c>padding="max_length", max_length=N, truncation=True</c>.
/// </summary>
public interface ITextTokenizer
{
    /// <summary><c>model_max_length</c> from tokenizer_config.json (77 for CLIP, 512 for T5).</summary>
    int ModelMaxLength { get; }

    /// <summary>Id written after the text up to the requested length.</summary>
    int PadTokenId { get; }

    /// <summary>Id of the end-of-sequence token, which truncation keeps as the last id before the padding.</summary>
    int EosTokenId { get; }

    /// <summary>Number of ids (the model vocabulary plus added special tokens).</summary>
    int VocabSize { get; }

    /// <summary>
    /// Encodes <paramref name="text"/> with the special tokens the model expects (CLIP: BOS ... EOS; T5: ... &lt;/s&gt;),
    /// cut to <paramref name="maxLength"/> ids keeping the special tokens when <paramref name="truncate"/> is set, and
    /// padded with <see cref="PadTokenId"/> up to <paramref name="maxLength"/> when <paramref name="padToMaxLength"/> is set.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxLength"/> cannot hold the special tokens.</exception>
    TokenizedText Encode(string text, int maxLength, bool padToMaxLength = true, bool truncate = true);

    /// <summary>Readable text of <paramref name="ids"/>, special tokens left out (used to show what truncation cut).</summary>
    string Decode(IEnumerable<int> ids);
}

/// <summary>The result of <see cref="ITextTokenizer.Encode"/>.</summary>
/// <param name="Ids">The ids as the pipeline feeds them to the text encoder (special tokens, truncation, padding applied).</param>
/// <param name="UntruncatedLength">How many ids the text gives, special tokens included, before truncation and padding.</param>
/// <param name="TruncatedIds">The text ids that truncation dropped (empty when nothing was cut).</param>
public sealed record TokenizedText(int[] Ids, int UntruncatedLength, int[] TruncatedIds)
{
    /// <summary>Whether truncation dropped part of the text.</summary>
    public bool WasTruncated => TruncatedIds.Length > 0;
}
