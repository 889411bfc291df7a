using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// diffusers' <c>Flux2KleinPipeline._get_qwen3_prompt_embeds</c> (v0.39.0): each prompt rendered with Qwen3's chat
/// template (one user message, generation prompt, thinking off: <see cref="Qwen3ChatTemplate"/>), tokenized with
/// <c>padding="max_length"</c> and truncation to max_sequence_length, run through Qwen3 with the attention mask, and
/// the hidden states <c>hidden_states[k]</c> for k in the chosen layers (default 9, 18, 27) stacked per token:
/// [B, max_sequence_length, layers x hidden_size], layer-major within each token (diffusers' stack on dim 1, then
/// permute(0, 2, 1, 3) and reshape).
/// <para>
/// Every position is kept, padding included: the pipeline passes no text mask onward, so the transformer attends to the
/// padded positions' states too (which the mask only kept from being attended to inside Qwen3). Only the layers up to
/// the deepest one asked for run.
/// </para>
/// </summary>
public sealed class Flux2KleinPromptEncoder
{
    private readonly Qwen2Tokenizer _tokenizer;
    private readonly Qwen3Model _textEncoder;

    /// <summary>diffusers' default <c>max_sequence_length</c> of the FLUX.2 [klein] pipeline.</summary>
    public const int DefaultMaxSequenceLength = 512;

    /// <summary>diffusers' default <c>text_encoder_out_layers</c> (for Qwen3-4B's 36 layers).</summary>
    public static IReadOnlyList<int> DefaultHiddenStatesLayers { get; } = [9, 18, 27];

    /// <summary>Creates the encoder over FLUX.2 [klein]'s <c>tokenizer</c> and <c>text_encoder</c> (a Qwen3ForCausalLM checkpoint loads as <see cref="Qwen3Model"/>).</summary>
    public Flux2KleinPromptEncoder(Qwen2Tokenizer tokenizer, Qwen3Model textEncoder)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(textEncoder);
        _tokenizer = tokenizer;
        _textEncoder = textEncoder;
    }

    /// <summary>Called for each prompt that was cut to fit (untruncated length in tokens, chat template included; the limit).</summary>
    public Action<int, int>? OnTruncated { get; init; }

    /// <summary>
    /// Encodes <paramref name="prompts"/> as one batch. Returns the prompt embeddings [B, maxSequenceLength,
    /// layers.Count x hidden_size] in <paramref name="dtype"/> on <paramref name="device"/>, owned by the caller.
    /// </summary>
    /// <param name="prompts">The prompts (diffusers: <c>""</c> when none is given).</param>
    /// <param name="device">Device of the result (the text encoder runs on its own device).</param>
    /// <param name="dtype">Dtype of the result (the text encoder runs in its own dtype; the states are converted after stacking, as diffusers does).</param>
    /// <param name="maxSequenceLength">Tokens per prompt, chat template included: shorter prompts are padded to it, longer ones cut.</param>
    /// <param name="hiddenStatesLayers">Indices into transformers' hidden_states (0: the embeddings, num_hidden_layers: the last layer after the final norm); default <see cref="DefaultHiddenStatesLayers"/>.</param>
    /// <param name="cancellationToken">Checked before each Qwen3 layer.</param>
    /// <exception cref="ArgumentException">No prompts, a null prompt, a max_sequence_length below 1, no layers, or a layer outside [0, num_hidden_layers].</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public Tensor Encode(IReadOnlyList<string> prompts, Device device, ScalarType dtype, int maxSequenceLength = DefaultMaxSequenceLength,
        IReadOnlyList<int>? hiddenStatesLayers = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(device);
        if (prompts.Count == 0) throw new ArgumentException("Give at least one prompt.", nameof(prompts));
        if (prompts.Any(p => p is null)) throw new ArgumentException("A prompt is null.", nameof(prompts));
        if (maxSequenceLength < 1)
            throw new ArgumentException($"max_sequence_length must be at least 1, got {maxSequenceLength}.", nameof(maxSequenceLength));
        var layers = hiddenStatesLayers ?? DefaultHiddenStatesLayers;
        if (layers.Count == 0) throw new ArgumentException("text_encoder_out_layers must name at least one hidden state.", nameof(hiddenStatesLayers));
        int layerCount = _textEncoder.Config.NumHiddenLayers;
        var outside = layers.Where(k => k < 0 || k > layerCount).ToList();
        if (outside.Count > 0)
            throw new ArgumentException(
                $"text_encoder_out_layers [{string.Join(", ", layers)}]: {string.Join(", ", outside)} outside [0, {layerCount}] " +
                $"(the text encoder has {layerCount} layers, so hidden_states has {layerCount + 1} entries; negative indices are not supported).",
                nameof(hiddenStatesLayers));
        cancellationToken.ThrowIfCancellationRequested();

        var batch = Qwen3ChatBatch.Tokenize(_tokenizer, prompts, maxSequenceLength, padToMaxLength: true, enableThinking: false, OnTruncated);

        using var scope = NewDisposeScope();
        var encoderDevice = _textEncoder.WeightDevice();
        using var noGrad = no_grad();
        var ids = tensor(batch.Ids, [batch.Count, batch.Width], device: encoderDevice);
        var mask = tensor(batch.Mask, [batch.Count, batch.Width], device: encoderDevice);
        var states = _textEncoder.HiddenStates(ids, mask, layers, cancellationToken);
        // [B, layers, L, D] -> [B, L, layers, D] -> [B, L, layers * D], converted after stacking as diffusers does.
        var stacked = stack(states, 1).to(dtype, device);
        long b = stacked.shape[0], n = stacked.shape[1], l = stacked.shape[2], d = stacked.shape[3];
        return stacked.permute(0, 2, 1, 3).reshape(b, l, n * d).MoveToOuterDisposeScope();
    }
}
