using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>GlmModel</c> (CogView4's text encoder: THUDM/glm-4-9b-hf's decoder without its head): token embedding,
/// decoder layers (RMS norms before attention and MLP, grouped-query causal self-attention with biased q / k / v and
/// GLM's partial interleaved rotary embedding, a fused gate-up SwiGLU MLP), final norm. Keys <c>embed_tokens.*</c>,
/// <c>layers.{i}.*</c>, <c>norm.*</c>; checkpoints saved from <c>GlmForCausalLM</c> carry them under <c>model.</c>, which
/// <see cref="FromPretrained"/> accepts. Only the encoder forward is implemented (no key / value cache, no LM head).
/// </summary>
public sealed class GlmModel : nn.Module
{
    private const string CausalLMPrefix = "model.";

    private readonly Embedding embed_tokens;
    private readonly ModuleList<Qwen3DecoderLayer> layers;
    private readonly RMSNorm norm;

    /// <summary>The configuration the model was built from.</summary>
    public GlmConfig Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> it holds no memory and is an empty shell to load into).</summary>
    /// <exception cref="ArgumentException">The config's sizes are inconsistent.</exception>
    /// <exception cref="NotSupportedException">The config asks for rotary scaling.</exception>
    public GlmModel(GlmConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(GlmModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        // Qwen2's layer shape (biased q / k / v, unbiased o, no q / k norms) with GLM's rotary and fused gate-up MLP.
        var spec = new QwenDecoderSpec(config.HiddenSize, config.IntermediateSize, config.NumAttentionHeads, config.KeyValueHeads, config.HeadDim,
            config.HiddenAct, config.RmsNormEps, QkvBias: config.AttentionBias, OutputBias: false, QkNorm: false) { Rotary = GlmRotary.Apply };
        layers = new ModuleList<Qwen3DecoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new Qwen3DecoderLayer(spec, device, dtype, new GlmMLP(config, device, dtype)));
        norm = new RMSNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads <c>config.json</c> and <c>model.safetensors</c> (or shards) from a model folder, strictly: every key of the
    /// model, each either as is or under the <c>model.</c> prefix of a <c>GlmForCausalLM</c> checkpoint, and no other key.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config, or the checkpoint holds other tensors.</exception>
    public static GlmModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<GlmConfig, GlmModel>(folder, (c, meta) => new GlmModel(c, meta), dtype, device, variant, new WeightLoadOptions
        {
            AlternateKey = k => CausalLMPrefix + k,
        });

    /// <summary>
    /// transformers' <c>model(input_ids)[0]</c>: [batch, seq] integer ids, causal attention over every position (no
    /// padding mask: CogView4 passes none), positions 0 .. seq-1. Returns last_hidden_state [batch, seq, hidden_size] (after
    /// the final norm), in the weights' dtype.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor in the vocabulary.</exception>
    public Tensor Forward(Tensor inputIds, CancellationToken cancellationToken = default) => HiddenState(inputIds, -1, cancellationToken);

    /// <summary>
    /// transformers' <c>model(input_ids, output_hidden_states=True).hidden_states[index]</c> (negative indices count from
    /// the end; CogView4 takes -2) computed with only the layers it needs: index k &lt; num_hidden_layers is the output of the
    /// first k layers (0: the embeddings), index num_hidden_layers (or -1) the last layer's output after the final norm.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is outside [-(layers + 1), layers].</exception>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor in the vocabulary.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each layer).</exception>
    public Tensor HiddenState(Tensor inputIds, int index, CancellationToken cancellationToken = default)
    {
        int count = Config.NumHiddenLayers + 1;
        if (index < -count || index >= count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"GlmModel: hidden state index must lie in [{-count}, {count - 1}] ({count - 1} layers).");
        int layerCount = index < 0 ? count + index : index;
        var ids = TokenIds.Check(inputIds, Config.VocabSize, null, nameof(GlmModel));
        using var scope = NewDisposeScope();
        var h = embed_tokens.forward(ids);
        if (layerCount > 0)
        {
            long length = ids.shape[1];
            var (cos, sin) = Qwen3Rotary.CosSin(length, Config.RotaryDim, Config.EffectiveRopeTheta, h.dtype, h.device);
            var causal = QwenCausalMask.Bias(null, ids.shape[0], length, h.dtype, h.device);
            for (int i = 0; i < layerCount; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var next = layers[i].forward(h, cos, sin, causal);
                h.Dispose();
                h = next;
            }
        }
        var result = layerCount == Config.NumHiddenLayers ? norm.forward(h) : h;
        return result.MoveToOuterDisposeScope();
    }
}
