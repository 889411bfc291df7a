using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>Qwen3Model</c> (Z-Image's text encoder, Qwen3-4B): token embedding, decoder layers (RMS pre-norms,
/// grouped-query self-attention with per-head q / k RMS norms and rotary embeddings, SwiGLU MLP), final RMS norm. Keys
/// <c>embed_tokens.*</c>, <c>layers.{i}.*</c>, <c>norm.*</c>; checkpoints saved from <c>Qwen3ForCausalLM</c> carry them
/// under <c>model.</c>, which <see cref="FromPretrained"/> accepts as transformers' base-model-prefix loading does.
/// Attention is causal and, under an attention mask, drops the masked keys for every query, as transformers' eager
/// attention (an additive mask of the dtype's minimum).
/// </summary>
public sealed class Qwen3Model : nn.Module
{
    private const string CausalLMPrefix = "model.";

    private readonly Embedding embed_tokens;
    private readonly ModuleList<Qwen3DecoderLayer> layers;
    private readonly RMSNorm norm;

    /// <summary>The configuration the model was built from.</summary>
    public Qwen3Config Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> it holds no memory and is an empty shell to load into).</summary>
    /// <exception cref="ArgumentException">The config's sizes are inconsistent.</exception>
    /// <exception cref="NotSupportedException">The config asks for rotary scaling or sliding-window attention.</exception>
    public Qwen3Model(Qwen3Config config, Device? device = null, ScalarType? dtype = null) : base(nameof(Qwen3Model))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        layers = new ModuleList<Qwen3DecoderLayer>();
        var spec = QwenDecoderSpec.Of(config);
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new Qwen3DecoderLayer(spec, device, dtype));
        norm = new RMSNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads <c>config.json</c> and <c>model.safetensors</c> (or shards) from a model folder, strictly: every key of the
    /// model, each either as is or under the <c>model.</c> prefix of a <c>Qwen3ForCausalLM</c> checkpoint, and no other key.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config, or the checkpoint holds other tensors
    /// (a causal-LM head, for instance).</exception>
    /// <exception cref="NotSupportedException">The config asks for rotary scaling or sliding-window attention.</exception>
    /// <param name="folder">The model folder.</param>
    /// <param name="dtype">The weights' dtype (null: as stored).</param>
    /// <param name="device">Where the weights go (null: the CPU).</param>
    /// <param name="variant">A weights variant such as "fp16".</param>
    /// <param name="skipLMHead">Leave a <c>Qwen3ForCausalLM</c> checkpoint's <c>lm_head.*</c> unread instead of refusing it:
    /// for pipelines that name the causal LM but only read its hidden states (FLUX.2 [klein]).</param>
    public static Qwen3Model FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null, bool skipLMHead = false) =>
        PretrainedLoader.Load<Qwen3Config, Qwen3Model>(folder, (c, meta) => new Qwen3Model(c, meta), dtype, device, variant, new WeightLoadOptions
        {
            AlternateKey = k => CausalLMPrefix + k,
            IgnoreUnexpected = skipLMHead ? k => k.StartsWith("lm_head.", StringComparison.Ordinal) : null,
        });

    /// <summary>
    /// transformers' <c>model(input_ids, attention_mask, output_hidden_states=...)</c>: [batch, seq] integer ids and an
    /// optional [batch, seq] mask (nonzero keeps a token; masked tokens are never attended to, but still get outputs).
    /// Returns last_hidden_state (after the final norm) and, when asked, the num_hidden_layers + 1 hidden states.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor in the vocabulary, or the mask has another shape.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each layer).</exception>
    public Qwen3ModelOutput Forward(Tensor inputIds, Tensor? attentionMask = null, bool outputHiddenStates = true,
        CancellationToken cancellationToken = default)
    {
        using var scope = NewDisposeScope();
        var hidden = outputHiddenStates ? new List<Tensor>() : null;
        var last = Run(inputIds, attentionMask, Config.NumHiddenLayers, finalNorm: true, hidden, cancellationToken);
        last.MoveToOuterDisposeScope();
        // The last hidden state is the same tensor as last_hidden_state: moved once.
        foreach (var t in hidden ?? []) if (!ReferenceEquals(t, last)) t.MoveToOuterDisposeScope();
        return new Qwen3ModelOutput(last, hidden ?? []);
    }

    /// <summary>
    /// <c>hidden_states[index]</c> of <see cref="Forward"/> (negative indices count from the end, as in Python; Z-Image
    /// takes -2) computed with only the layers it needs: index k &lt; num_hidden_layers is the output of the first k
    /// layers (0: the embeddings), index num_hidden_layers (or -1) the last layer's output after the final norm. The
    /// values are those of <see cref="Forward"/>: the skipped layers and norm come after the state asked for.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is outside [-(layers + 1), layers].</exception>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor in the vocabulary, or the mask has another shape.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each layer).</exception>
    public Tensor HiddenState(Tensor inputIds, Tensor? attentionMask, int index, CancellationToken cancellationToken = default)
    {
        int count = Config.NumHiddenLayers + 1;
        if (index < -count || index >= count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Qwen3Model: hidden state index must lie in [{-count}, {count - 1}] ({count - 1} layers).");
        int k = index < 0 ? count + index : index;
        using var scope = NewDisposeScope();
        bool last = k == Config.NumHiddenLayers;
        return Run(inputIds, attentionMask, k, finalNorm: last, null, cancellationToken).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>hidden_states[k]</c> of <see cref="Forward"/> for each k in <paramref name="indices"/> (0 .. num_hidden_layers, in
    /// any order, repeats allowed; FLUX.2 [klein] takes 9, 18, 27 of 36), computed with only the layers up to the largest
    /// index, as <see cref="HiddenState"/> does for one. The returned tensors are the caller's.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="indices"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An index is outside [0, num_hidden_layers].</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each layer).</exception>
    public IReadOnlyList<Tensor> HiddenStates(Tensor inputIds, Tensor? attentionMask, IReadOnlyList<int> indices,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(indices);
        if (indices.Count == 0) throw new ArgumentException("Qwen3Model: give at least one hidden state index.", nameof(indices));
        foreach (int index in indices)
            if (index < 0 || index > Config.NumHiddenLayers)
                throw new ArgumentOutOfRangeException(nameof(indices), index, $"Qwen3Model: hidden state indices must lie in [0, {Config.NumHiddenLayers}] ({Config.NumHiddenLayers} layers).");
        int deepest = indices.Max();
        bool last = deepest == Config.NumHiddenLayers;
        using var scope = NewDisposeScope();
        var collected = new List<Tensor>();
        var final = Run(inputIds, attentionMask, deepest, finalNorm: last, collected, cancellationToken);
        // Run collects the embeddings and every layer's output but the last it runs; that one is its result.
        if (!last) collected.Add(final);
        return indices.Select(k => collected[k].alias().MoveToOuterDisposeScope()).ToList();
    }

    /// <summary>Embeddings, then <paramref name="layerCount"/> layers, then the final norm when asked.</summary>
    private Tensor Run(Tensor inputIds, Tensor? attentionMask, int layerCount, bool finalNorm, List<Tensor>? hidden,
        CancellationToken cancellationToken)
    {
        var ids = TokenIds.Check(inputIds, Config.VocabSize, null, nameof(Qwen3Model));
        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(ids.shape))
            throw new ArgumentException($"Qwen3Model: attention_mask must be [{string.Join(", ", ids.shape)}] like the ids, got [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
        var h = embed_tokens.forward(ids);
        hidden?.Add(h);
        if (layerCount == 0 && !finalNorm) return h;
        long length = ids.shape[1];
        var (cos, sin) = Qwen3Rotary.CosSin(length, Config.HeadDim, Config.EffectiveRopeTheta, h.dtype, h.device);
        var bias = QwenCausalMask.Bias(attentionMask?.to(ids.device), ids.shape[0], length, h.dtype, h.device);
        for (int i = 0; i < layerCount; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var next = layers[i].forward(h, cos, sin, bias);
            // transformers' hidden_states: the embeddings and every layer's output but the last, then the final norm's.
            if (hidden is not null && i < layerCount - 1) hidden.Add(next);
            else if (hidden is null) h.Dispose();
            h = next;
        }
        if (!finalNorm) return h;
        var normed = norm.forward(h);
        hidden?.Add(normed);
        return normed;
    }
}

/// <summary>
/// Outputs of <see cref="Qwen3Model.Forward"/>. The tensors are owned by this object (outside any dispose scope): dispose
/// it, or move what you keep into your own scope first.
/// </summary>
public sealed class Qwen3ModelOutput : IDisposable
{
    private bool _disposed;

    internal Qwen3ModelOutput(Tensor lastHiddenState, IReadOnlyList<Tensor> hiddenStates)
    {
        LastHiddenState = lastHiddenState;
        HiddenStates = hiddenStates;
    }

    /// <summary>[batch, seq, hidden]: the last layer's output after the final norm.</summary>
    public Tensor LastHiddenState { get; }

    /// <summary>
    /// num_hidden_layers + 1 tensors [batch, seq, hidden] when asked for (else empty), as transformers returns them:
    /// [0] the embeddings, [i] the output of layer i for i &lt; num_hidden_layers, and the last one the final norm's
    /// output (the same tensor as <see cref="LastHiddenState"/>). Z-Image uses [^2].
    /// </summary>
    public IReadOnlyList<Tensor> HiddenStates { get; }

    /// <summary>Releases every tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in HiddenStates.Where(t => !ReferenceEquals(t, LastHiddenState))) t.Dispose();
        LastHiddenState.Dispose();
    }
}
