namespace DiffusersSharp.Tokenizers;

/// <summary>Which end of a row the padding goes to (transformers' <c>padding_side</c>).</summary>
public enum PaddingSide
{
    /// <summary>Ids first, then padding (<c>"right"</c>; what SanaPipeline sets before tokenizing).</summary>
    Right,

    /// <summary>Padding first, then ids (<c>"left"</c>).</summary>
    Left,
}

/// <summary>
/// Prompts tokenized into one [<see cref="Count"/>, <see cref="Width"/>] layout, as transformers returns
/// <c>tokenizer(prompts, padding="max_length", max_length=Width, truncation=True, return_tensors="pt")</c>:
/// <c>input_ids</c> and <c>attention_mask</c> (1 on the ids, 0 on the padding), row-major.
/// </summary>
/// <param name="Ids">input_ids, row-major [Count * Width].</param>
/// <param name="Mask">attention_mask, row-major [Count * Width].</param>
/// <param name="Lengths">Ids (special tokens included) kept in each row, after truncation.</param>
/// <param name="UntruncatedLengths">Ids each prompt gives before truncation (special tokens included).</param>
/// <param name="Width">Ids per row (max_length).</param>
public sealed record TokenizedBatch(long[] Ids, long[] Mask, int[] Lengths, int[] UntruncatedLengths, int Width)
{
    /// <summary>Number of prompts (rows).</summary>
    public int Count => Lengths.Length;

    /// <summary>The ids of row <paramref name="row"/>.</summary>
    public long[] RowIds(int row) => Ids.AsSpan(row * Width, Width).ToArray();

    /// <summary>The attention mask of row <paramref name="row"/>.</summary>
    public long[] RowMask(int row) => Mask.AsSpan(row * Width, Width).ToArray();

    /// <summary>Whether truncation cut any prompt.</summary>
    public bool WasTruncated => Lengths.Where((l, i) => l < UntruncatedLengths[i]).Any();
}
