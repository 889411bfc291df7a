using DiffusersSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>T5EncoderModel</c> (SD3's text_encoder_3): the T5 encoder stack over the shared token embedding.
/// Keys <c>shared.weight</c> and <c>encoder.*</c>; <c>encoder.embed_tokens.weight</c> is the same tensor as
/// <c>shared.weight</c> (tied) and may be absent from checkpoints.
/// </summary>
public sealed class T5EncoderModel : nn.Module
{

    private readonly Embedding shared;
    private readonly T5Stack encoder;

    /// <summary>The configuration the model was built from.</summary>
    public T5Config Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> it holds no memory and is an empty shell to load into).</summary>
    public T5EncoderModel(T5Config config, Device? device = null, ScalarType? dtype = null) : base(nameof(T5EncoderModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        shared = nn.Embedding(config.VocabSize, config.DModel, device: device, dtype: dtype);
        encoder = new T5Stack(config, shared, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads <c>config.json</c> and <c>model.safetensors</c> (or shards) from a model folder, strictly. As in
    /// transformers, the feed-forward output projections (<c>wo</c>) of a float16 model are kept in float32.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static T5EncoderModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<T5Config, T5EncoderModel>(folder, (c, meta) => new T5EncoderModel(c, meta), dtype, device, variant, new WeightLoadOptions
        {
            Aliases = new Dictionary<string, string>
            {
                ["encoder.embed_tokens.weight"] = "shared.weight",
                ["shared.weight"] = "encoder.embed_tokens.weight",
            },
            KeepInFloat32WithFloat16 = k => k.EndsWith(".DenseReluDense.wo.weight", StringComparison.Ordinal),
        });

    /// <summary>
    /// Encodes [batch, seq] int64 token ids without an attention mask (padding takes part, as in SD3) and returns
    /// last_hidden_state [batch, seq, d_model] after the final RMS norm.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor or are out of the vocabulary.</exception>
    public Tensor Forward(Tensor inputIds) => Forward(inputIds, null);

    /// <summary>
    /// Encodes [batch, seq] int64 token ids under <paramref name="attentionMask"/> [batch, seq] (1 keeps a token, 0 drops
    /// it as a key of every self-attention, as transformers' <c>attention_mask</c>: PixArt passes the tokenizer's mask;
    /// null attends to everything) and returns last_hidden_state [batch, seq, d_model] after the final RMS norm. Dropped
    /// tokens still get outputs (they attend to the kept ones), as in transformers.
    /// </summary>
    /// <exception cref="ArgumentException">The ids are not a 2-D integer tensor or are out of the vocabulary, or the mask has another shape.</exception>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        var ids = TokenIds.Check(inputIds, Config.VocabSize, null, nameof(T5EncoderModel));
        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(ids.shape))
            throw new ArgumentException($"attention_mask must be [{string.Join(", ", ids.shape)}] like the ids, got [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
        return encoder.forward(ids, attentionMask?.to(ids.device)).MoveToOuterDisposeScope();
    }
}
