using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// The language model of transformers' <c>Qwen2_5_VLForConditionalGeneration</c> (<c>Qwen2_5_VLTextModel</c>), Qwen-Image's
/// text encoder, for text-only input: token embeddings, Qwen2 decoder layers (biased q / k / v, unbiased o, grouped-query
/// attention, SwiGLU) under a causal mask, and a final RMSNorm. For text the multimodal rope's three position rows are equal
/// (transformers' <c>get_rope_index</c>: <c>cumsum(mask) − 1</c>, padded tokens at 1), so each of its sections takes the
/// same angle and it is the plain rope over those positions. Loaded from the whole checkpoint: the language model's tensors
/// (<c>model.*</c>, or <c>model.language_model.*</c> in newer layouts), the vision tower and <c>lm_head</c> left unread.
/// </summary>
public sealed class Qwen2_5_VLTextModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Embedding embed_tokens;
    private readonly ModuleList<Qwen3DecoderLayer> layers;
    private readonly RMSNorm norm;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public Qwen2_5_VLTextConfig Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> an empty shell to load into).</summary>
    /// <exception cref="ArgumentException">The config's sizes are inconsistent.</exception>
    /// <exception cref="NotSupportedException">The config asks for another rope type or sliding-window attention.</exception>
    public Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(Qwen2_5_VLTextModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var spec = new QwenDecoderSpec(config.HiddenSize, config.IntermediateSize, config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim,
            config.HiddenAct, config.RmsNormEps, QkvBias: true, OutputBias: false, QkNorm: false);
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        layers = new ModuleList<Qwen3DecoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new Qwen3DecoderLayer(spec, device, dtype));
        norm = new RMSNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a <c>text_encoder</c> folder of a <c>Qwen2_5_VLForConditionalGeneration</c> checkpoint (config.json,
    /// model.safetensors or shards), strictly: every language-model tensor under the checkpoint's one prefix, and no other
    /// tensor than the vision tower's (<c>visual.*</c> / <c>model.visual.*</c>) and <c>lm_head.*</c>, which are not read.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config, or other tensors are present.</exception>
    public static Qwen2_5_VLTextModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Model folder not found: {folder}");
        var config = Qwen2_5_VLTextConfig.Read(Path.Combine(folder, "config.json"));
        // transformers 4.52+ saves the language model under model.language_model., older versions under model.
        string prefix = "model.";
        using (var weights = WeightFiles.TryOpen(folder, variant))
            if (weights is not null && weights.Tensors.Keys.Any(k => k.StartsWith("model.language_model.", StringComparison.Ordinal)))
                prefix = "model.language_model.";
        return PretrainedLoader.Load(folder, config, (c, meta) => new Qwen2_5_VLTextModel(c, meta), dtype, device, variant, new WeightLoadOptions
        {
            AlternateKey = k => prefix + k,
            IgnoreUnexpected = k => k.StartsWith("visual.", StringComparison.Ordinal) || k.StartsWith("model.visual.", StringComparison.Ordinal)
                || k.StartsWith("lm_head.", StringComparison.Ordinal),
        });
    }

    /// <summary>
    /// transformers' <c>hidden_states[-1]</c> for text: the last layer's output after the final norm, [batch, seq, hidden],
    /// for [batch, seq] integer ids and an optional [batch, seq] mask (nonzero keeps a token; masked tokens are never
    /// attended to, and their rows are what transformers gives them, of no use).
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor in the vocabulary, or the mask has another shape.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each layer).</exception>
    public Tensor LastHiddenState(Tensor inputIds, Tensor? attentionMask = null, CancellationToken cancellationToken = default)
    {
        var ids = TokenIds.Check(inputIds, Config.VocabSize, null, nameof(Qwen2_5_VLTextModel));
        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(ids.shape))
            throw new ArgumentException($"Qwen2_5_VLTextModel: attention_mask must be [{string.Join(", ", ids.shape)}] like the ids, got [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
        using var scope = NewDisposeScope();
        var mask = attentionMask?.to(ids.device);
        var h = embed_tokens.forward(ids);
        long batch = ids.shape[0], length = ids.shape[1];
        // get_rope_index for text: positions count the kept tokens (cumsum - 1); masked tokens sit at 1.
        var positions = mask is null
            ? arange(length, dtype: ScalarType.Int64, device: ids.device).unsqueeze(0).expand(batch, length)
            : mask.to(ScalarType.Int64).cumsum(-1).sub_(1).masked_fill_(mask.eq(0), 1);
        var (cos, sin) = Qwen3Rotary.CosSin(positions, Config.HeadDim, Config.EffectiveRopeTheta, h.dtype);
        var bias = QwenCausalMask.Bias(mask, batch, length, h.dtype, h.device);
        foreach (var layer in layers)
        {
            cancellationToken.ThrowIfCancellationRequested();
            h = h.Consume(x => layer.forward(x, cos, sin, bias));
        }
        return h.Consume(norm.forward).MoveToOuterDisposeScope();
    }
}
