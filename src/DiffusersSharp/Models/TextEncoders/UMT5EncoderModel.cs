using DiffusersSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>UMT5EncoderModel</c> (AuraFlow's text_encoder): T5's encoder (<see cref="T5EncoderModel"/>: RMS norms,
/// no attention scaling, softmax in float32, the float16 clamps, the gated-gelu feed-forward whose <c>wo</c> stays in
/// float32 for float16 models) with one difference: every block owns its <c>relative_attention_bias</c>
/// (<c>encoder.block.N.layer.0.SelfAttention.relative_attention_bias.weight</c> for every N) and adds its own bias, where
/// T5 shares block 0's. Keys <c>shared.weight</c> and <c>encoder.*</c>; <c>encoder.embed_tokens.weight</c> is the same
/// tensor as <c>shared.weight</c> (tied) and either may be the one a checkpoint holds.
/// </summary>
public sealed class UMT5EncoderModel : nn.Module
{
    private readonly Embedding shared;
    private readonly T5Stack encoder;

    /// <summary>The configuration the model was built from.</summary>
    public UMT5Config Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> it holds no memory and is an empty shell to load into).</summary>
    /// <exception cref="ArgumentException">The config cannot describe a model.</exception>
    public UMT5EncoderModel(UMT5Config config, Device? device = null, ScalarType? dtype = null) : base(nameof(UMT5EncoderModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        shared = nn.Embedding(config.VocabSize, config.DModel, device: device, dtype: dtype);
        encoder = new T5Stack(config, shared, device, dtype, relativeBiasInEveryBlock: true);
        RegisterComponents();
    }

    /// <summary>
    /// Loads <c>config.json</c> and <c>model.safetensors</c> (or shards) from a model folder, strictly. As in
    /// transformers (<c>_keep_in_fp32_modules = ["wo"]</c>), the feed-forward output projections of a float16 model are
    /// kept in float32.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static UMT5EncoderModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<UMT5Config, UMT5EncoderModel>(folder, (c, meta) => new UMT5EncoderModel(c, meta), dtype, device, variant, new WeightLoadOptions
        {
            Aliases = new Dictionary<string, string>
            {
                ["encoder.embed_tokens.weight"] = "shared.weight",
                ["shared.weight"] = "encoder.embed_tokens.weight",
            },
            KeepInFloat32WithFloat16 = k => k.EndsWith(".DenseReluDense.wo.weight", StringComparison.Ordinal),
        });

    /// <summary>
    /// Encodes [batch, seq] int64 token ids under <paramref name="attentionMask"/> [batch, seq] (1 keeps a token, 0 drops
    /// it as a key of every self-attention, as transformers' <c>attention_mask</c>; null attends to everything) and
    /// returns last_hidden_state [batch, seq, d_model] after the final RMS norm. Dropped tokens still get outputs (they
    /// attend to the kept ones), as in transformers.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor or are out of the vocabulary, or the mask has another shape.</exception>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        var ids = TokenIds.Check(inputIds, Config.VocabSize, null, nameof(UMT5EncoderModel));
        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(ids.shape))
            throw new ArgumentException($"attention_mask must be [{string.Join(", ", ids.shape)}] like the ids, got [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
        return encoder.forward(ids, attentionMask?.to(ids.device)).MoveToOuterDisposeScope();
    }
}
