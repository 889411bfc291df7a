using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.ZImage;

/// <summary>
/// diffusers' <c>ZImagePipeline._encode_prompt</c>: each prompt rendered with Qwen3's chat template (one user message,
/// generation prompt, thinking on: <see cref="Qwen3ChatTemplate"/>), tokenized (truncated to max_sequence_length), run
/// through the Qwen3 text encoder with the attention mask, and the hidden state before the last layer
/// (<c>hidden_states[-2]</c>) kept at the prompt's real tokens only: one [L_i, hidden_size] tensor per prompt, in the
/// encoder's dtype and on its device.
/// <para>
/// diffusers pads every prompt to max_sequence_length (512); this pads the batch only to its longest prompt. The kept
/// positions do not depend on that: attention is causal and padded keys are masked, so they attend to the same tokens
/// either way. Only the layers up to the one whose output is kept run (the last layer and final norm are skipped).
/// </para>
/// </summary>
public sealed class Qwen3PromptEncoder
{
    private readonly Qwen2Tokenizer _tokenizer;
    private readonly Qwen3Model _textEncoder;

    /// <summary>Creates the encoder over Z-Image's <c>tokenizer</c> and <c>text_encoder</c>.</summary>
    public Qwen3PromptEncoder(Qwen2Tokenizer tokenizer, Qwen3Model textEncoder)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(textEncoder);
        if (textEncoder.Config.NumHiddenLayers < 1)
            throw new ArgumentException("Z-Image's prompt encoding takes hidden_states[-2]: the text encoder needs at least one layer.", nameof(textEncoder));
        _tokenizer = tokenizer;
        _textEncoder = textEncoder;
    }

    /// <summary>Called for each prompt that was cut to fit (untruncated length in tokens, chat template included; the limit).</summary>
    public Action<int, int>? OnTruncated { get; init; }

    /// <summary>diffusers' default <c>max_sequence_length</c> of the Z-Image pipeline.</summary>
    public const int DefaultMaxSequenceLength = 512;

    /// <summary>
    /// Encodes <paramref name="prompts"/> as one batch. Returns one [L_i, hidden_size] tensor per prompt (L_i: the
    /// prompt's token count after the chat template, at most <paramref name="maxSequenceLength"/>), owned by the caller.
    /// </summary>
    /// <exception cref="ArgumentException">No prompts, a null prompt, or a max_sequence_length below 1.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public IReadOnlyList<Tensor> Encode(IReadOnlyList<string> prompts, int maxSequenceLength = DefaultMaxSequenceLength,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ArgumentException("Give at least one prompt.", nameof(prompts));
        if (prompts.Any(p => p is null)) throw new ArgumentException("A prompt is null.", nameof(prompts));
        if (maxSequenceLength < 1)
            throw new ArgumentException($"max_sequence_length must be at least 1, got {maxSequenceLength}.", nameof(maxSequenceLength));
        cancellationToken.ThrowIfCancellationRequested();

        var batch = Qwen3ChatBatch.Tokenize(_tokenizer, prompts, maxSequenceLength, padToMaxLength: false, enableThinking: true, OnTruncated);

        using var scope = NewDisposeScope();
        var device = _textEncoder.WeightDevice();
        using var noGrad = no_grad();
        var idsTensor = tensor(batch.Ids, [batch.Count, batch.Width], device: device);
        var maskTensor = tensor(batch.Mask, [batch.Count, batch.Width], device: device);
        var hidden = _textEncoder.HiddenState(idsTensor, maskTensor, -2, cancellationToken);
        var result = new List<Tensor>(batch.Count);
        for (int i = 0; i < batch.Count; i++)
            result.Add(hidden[i].narrow(0, 0, batch.Lengths[i]).clone().MoveToOuterDisposeScope());
        return result;
    }
}
