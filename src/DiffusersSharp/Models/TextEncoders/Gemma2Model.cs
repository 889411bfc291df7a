using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>Gemma2Model</c> (Sana's text encoder, the decoder of gemma-2-2b-it without its head): token embedding
/// scaled by √hidden_size (rounded to the activations' dtype first, as transformers does), decoder layers (Gemma's
/// (1 + weight) RMS norms before and after attention and MLP, grouped-query self-attention with rotary embeddings,
/// query_pre_attn_scalar scaling and tanh soft-capping of the logits, GeGLU MLP), final norm. Even layers attend
/// within a sliding window of <c>sliding_window</c> tokens, odd ones to every earlier token (or as
/// <c>layer_types</c> says). Attention is causal and, under an attention mask, drops the masked keys for every query,
/// as transformers' eager attention (additive masks of the dtype's minimum). Keys <c>embed_tokens.*</c>,
/// <c>layers.{i}.*</c>, <c>norm.*</c>; checkpoints saved from <c>Gemma2ForCausalLM</c> carry them under <c>model.</c>,
/// which <see cref="FromPretrained"/> accepts as transformers' base-model-prefix loading does. Only the encoder forward
/// is implemented (no key / value cache, no causal-LM head).
/// </summary>
public sealed class Gemma2Model : nn.Module
{
    private const string CausalLMPrefix = "model.";

    private readonly Embedding embed_tokens;
    private readonly ModuleList<Gemma2DecoderLayer> layers;
    private readonly RMSNorm norm;

    /// <summary>The configuration the model was built from.</summary>
    public Gemma2Config Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> it holds no memory and is an empty shell to load into).</summary>
    /// <exception cref="ArgumentException">The config's sizes are inconsistent.</exception>
    /// <exception cref="NotSupportedException">The config asks for rotary scaling or bidirectional attention.</exception>
    public Gemma2Model(Gemma2Config config, Device? device = null, ScalarType? dtype = null) : base(nameof(Gemma2Model))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        layers = new ModuleList<Gemma2DecoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new Gemma2DecoderLayer(config, device, dtype));
        norm = RMSNorm.Gemma(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads <c>config.json</c> and <c>model.safetensors</c> (or shards) from a model folder, strictly: every key of the
    /// model, each either as is or under the <c>model.</c> prefix of a <c>Gemma2ForCausalLM</c> checkpoint, and no other key.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config, or the checkpoint holds other tensors
    /// (a causal-LM head, for instance).</exception>
    /// <exception cref="NotSupportedException">The config asks for rotary scaling or bidirectional attention.</exception>
    /// <param name="folder">The model folder (Sana's <c>text_encoder</c>).</param>
    /// <param name="dtype">The weights' dtype (null: as stored).</param>
    /// <param name="device">Where the weights go (null: the CPU).</param>
    /// <param name="variant">A weights variant such as "fp16".</param>
    public static Gemma2Model FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<Gemma2Config, Gemma2Model>(folder, (c, meta) => new Gemma2Model(c, meta), dtype, device, variant, new WeightLoadOptions
        {
            AlternateKey = k => CausalLMPrefix + k,
        });

    /// <summary>
    /// transformers' <c>model(input_ids, attention_mask=mask)[0]</c>, what diffusers' SanaPipeline reads: [batch, seq]
    /// integer ids and an optional [batch, seq] mask (nonzero keeps a token; masked tokens are never attended to, but
    /// still get outputs). Returns last_hidden_state [batch, seq, hidden_size] (after the final norm), in the weights' dtype.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor in the vocabulary, or the mask has another shape.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each layer).</exception>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, CancellationToken cancellationToken = default)
    {
        using var scope = NewDisposeScope();
        return Run(inputIds, attentionMask, Config.NumHiddenLayers, finalNorm: true, cancellationToken).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// transformers' <c>model(input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[index]</c>
    /// (negative indices count from the end, as in Python; Lumina-Image 2.0 takes -2) computed with only the layers it
    /// needs: index k &lt; num_hidden_layers is the output of the first k layers (0: the scaled embeddings), index
    /// num_hidden_layers (or -1) the last layer's output after the final norm (= <see cref="Forward"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is outside [-(layers + 1), layers].</exception>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor in the vocabulary, or the mask has another shape.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each layer).</exception>
    public Tensor HiddenState(Tensor inputIds, Tensor? attentionMask, int index, CancellationToken cancellationToken = default)
    {
        int count = Config.NumHiddenLayers + 1;
        if (index < -count || index >= count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Gemma2Model: hidden state index must lie in [{-count}, {count - 1}] ({count - 1} layers).");
        int k = index < 0 ? count + index : index;
        using var scope = NewDisposeScope();
        return Run(inputIds, attentionMask, k, finalNorm: k == Config.NumHiddenLayers, cancellationToken).MoveToOuterDisposeScope();
    }

    /// <summary>The scaled embeddings, then <paramref name="layerCount"/> layers, then the final norm when asked.</summary>
    private Tensor Run(Tensor inputIds, Tensor? attentionMask, int layerCount, bool finalNorm, CancellationToken cancellationToken)
    {
        var ids = TokenIds.Check(inputIds, Config.VocabSize, null, nameof(Gemma2Model));
        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(ids.shape))
            throw new ArgumentException($"Gemma2Model: attention_mask must be [{string.Join(", ", ids.shape)}] like the ids, got [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
        var h = embed_tokens.forward(ids);
        // transformers: hidden_states * torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype), so in bfloat16 the
        // factor itself is rounded (√2304 = 48 is exact; √3072 becomes 55.5).
        using (var normalizer = tensor(Math.Sqrt(Config.HiddenSize), dtype: h.dtype, device: h.device)) h.mul_(normalizer);
        if (layerCount > 0)
        {
            long length = ids.shape[1];
            var (cos, sin) = Qwen3Rotary.CosSin(length, Config.HeadDim, Config.EffectiveRopeTheta, h.dtype, h.device);
            var causal = QwenCausalMask.Bias(attentionMask?.to(ids.device), ids.shape[0], length, h.dtype, h.device);
            bool anySliding = Enumerable.Range(0, layerCount).Any(Config.IsSliding);
            var sliding = anySliding ? Gemma2Mask.SlidingWindow(causal, Config.SlidingWindow!.Value) : null;
            for (int i = 0; i < layerCount; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var next = layers[i].forward(h, cos, sin, Config.IsSliding(i) ? sliding! : causal);
                h.Dispose();
                h = next;
            }
        }
        return finalNorm ? norm.forward(h) : h;
    }
}
