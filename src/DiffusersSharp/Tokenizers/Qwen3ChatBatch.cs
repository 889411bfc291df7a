namespace DiffusersSharp.Tokenizers;

/// <summary>
/// The tokenizer half of the diffusers pipelines that prompt Qwen3 (Z-Image, FLUX.2 [klein]): each prompt rendered as
/// one user message with <see cref="Qwen3ChatTemplate"/>, tokenized, cut to max_length, and right-padded with the pad
/// token into one [batch, width] id / attention-mask layout, as transformers' tokenizer gives with
/// <c>padding="max_length"</c> (width = max_length) or <c>padding="longest"</c> (width = the longest prompt).
/// </summary>
internal sealed record Qwen3ChatBatch(long[] Ids, long[] Mask, int[] Lengths, int Width)
{
    /// <summary>Number of prompts (rows).</summary>
    public int Count => Lengths.Length;

    /// <summary>Renders, tokenizes and pads <paramref name="prompts"/>.</summary>
    /// <param name="tokenizer">Qwen3's tokenizer.</param>
    /// <param name="prompts">The prompts (non-null).</param>
    /// <param name="maxLength">Tokens kept per prompt, chat template included (truncation=True).</param>
    /// <param name="padToMaxLength">Pad every row to <paramref name="maxLength"/> (else to the longest row).</param>
    /// <param name="enableThinking">Qwen3's enable_thinking in the template (Z-Image: true; FLUX.2 [klein]: false).</param>
    /// <param name="onTruncated">Called for each prompt that was cut (its untruncated length, the limit).</param>
    public static Qwen3ChatBatch Tokenize(Qwen2Tokenizer tokenizer, IReadOnlyList<string> prompts, int maxLength,
        bool padToMaxLength, bool enableThinking, Action<int, int>? onTruncated = null)
    {
        var rows = new List<int[]>(prompts.Count);
        foreach (string prompt in prompts)
        {
            string text = Qwen3ChatTemplate.ApplyUserMessage(prompt, addGenerationPrompt: true, enableThinking: enableThinking);
            var encoded = tokenizer.Encode(text, maxLength, padToMaxLength: false);
            if (encoded.WasTruncated) onTruncated?.Invoke(encoded.UntruncatedLength, maxLength);
            rows.Add(encoded.Ids);
        }
        int width = padToMaxLength ? maxLength : rows.Max(r => r.Length);
        var ids = new long[rows.Count * width];
        var mask = new long[rows.Count * width];
        for (int i = 0; i < rows.Count; i++)
        {
            for (int j = 0; j < width; j++)
            {
                bool real = j < rows[i].Length;
                ids[i * width + j] = real ? rows[i][j] : tokenizer.PadTokenId;
                mask[i * width + j] = real ? 1 : 0;
            }
        }
        return new Qwen3ChatBatch(ids, mask, rows.Select(r => r.Length).ToArray(), width);
    }
}
