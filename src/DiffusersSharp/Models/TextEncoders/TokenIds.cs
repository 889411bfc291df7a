using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>Checks of token-id inputs, done before any compute so bad ids fail with a message instead of a native error.</summary>
internal static class TokenIds
{
    /// <summary>
    /// Requires a [batch, sequence] integer tensor with ids in [0, <paramref name="vocabSize"/>) and, when given, at most
    /// <paramref name="maxLength"/> positions. Returns the ids as int64 (a new tensor owned by the caller's scope).
    /// </summary>
    public static Tensor Check(Tensor inputIds, long vocabSize, long? maxLength, string model)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dim() != 2)
            throw new ArgumentException($"{model}: input ids must be [batch, sequence], got shape [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        if (inputIds.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte))
            throw new ArgumentException($"{model}: input ids must be an integer tensor (int64), got {inputIds.dtype}.", nameof(inputIds));
        long batch = inputIds.shape[0], length = inputIds.shape[1];
        if (batch == 0 || length == 0)
            throw new ArgumentException($"{model}: input ids are empty (shape [{batch}, {length}]).", nameof(inputIds));
        if (maxLength is { } max && length > max)
            throw new ArgumentException($"{model}: {length} tokens exceed max_position_embeddings {max}; truncate to {max} (the tokenizer's model_max_length).", nameof(inputIds));
        var ids = inputIds.to(ScalarType.Int64);
        long lo = ids.min().item<long>(), hi = ids.max().item<long>();
        if (lo < 0 || hi >= vocabSize)
            throw new ArgumentException($"{model}: token ids must lie in [0, {vocabSize}), got values from {lo} to {hi}.", nameof(inputIds));
        return ids;
    }
}
