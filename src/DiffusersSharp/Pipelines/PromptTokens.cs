using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>Token ids as every pipeline calls its tokenizers: padded to <c>max_length</c> and truncated.</summary>
internal static class PromptTokens
{
    /// <summary>[prompts, maxLength] int64 ids; reports each truncated prompt (tokenizer name, untruncated length, limit).</summary>
    public static Tensor Ids(ITextTokenizer tokenizer, IReadOnlyList<string> prompts, int maxLength, Device device, string name,
        Action<string, int, int>? onTruncated)
    {
        var (ids, mask) = IdsAndMask(tokenizer, prompts, maxLength, device, name, onTruncated);
        mask.Dispose();
        return ids;
    }

    /// <summary>
    /// The ids of <see cref="Ids"/> and the tokenizer's <c>attention_mask</c> [prompts, maxLength] int64: 1 for the tokens
    /// the text kept (special tokens included), 0 for the padding, as transformers returns it.
    /// </summary>
    public static (Tensor Ids, Tensor Mask) IdsAndMask(ITextTokenizer tokenizer, IReadOnlyList<string> prompts, int maxLength, Device device,
        string name, Action<string, int, int>? onTruncated)
    {
        var ids = new long[prompts.Count * maxLength];
        var mask = new long[prompts.Count * maxLength];
        for (int i = 0; i < prompts.Count; i++)
        {
            var encoded = tokenizer.Encode(prompts[i], maxLength);
            if (encoded.WasTruncated) onTruncated?.Invoke(name, encoded.UntruncatedLength, maxLength);
            int kept = Math.Min(encoded.UntruncatedLength, maxLength);
            for (int j = 0; j < maxLength; j++)
            {
                ids[i * maxLength + j] = encoded.Ids[j];
                mask[i * maxLength + j] = j < kept ? 1 : 0;
            }
        }
        return (tensor(ids, [prompts.Count, maxLength], device: device), tensor(mask, [prompts.Count, maxLength], device: device));
    }
}
