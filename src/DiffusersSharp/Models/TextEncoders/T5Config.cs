using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>T5Config</c> (the encoder part; decoder fields are ignored). Defaults are the Python constructor's
/// (t5-small); SD3's text_encoder_3 is T5 v1.1 XXL with <c>feed_forward_proj = "gated-gelu"</c>. Not sealed:
/// <see cref="UMT5Config"/> reads the same fields with UMT5's defaults.
/// </summary>
public record T5Config
{
    /// <summary>Token vocabulary size.</summary>
    public int VocabSize { get; init; } = 32128;

    /// <summary>Width of the residual stream.</summary>
    [JsonPropertyName("d_model")]
    public int DModel { get; init; } = 512;

    /// <summary>Width of one attention head (inner width is num_heads * d_kv, not necessarily d_model).</summary>
    [JsonPropertyName("d_kv")]
    public int DKv { get; init; } = 64;

    /// <summary>Width of the feed-forward hidden layer.</summary>
    [JsonPropertyName("d_ff")]
    public int DFf { get; init; } = 2048;

    /// <summary>Number of encoder blocks.</summary>
    public int NumLayers { get; init; } = 6;

    /// <summary>Attention heads per block.</summary>
    public int NumHeads { get; init; } = 8;

    /// <summary>Relative-position buckets (half per direction in the bidirectional encoder).</summary>
    public int RelativeAttentionNumBuckets { get; init; } = 32;

    /// <summary>Distance beyond which all relative positions share the last bucket.</summary>
    public int RelativeAttentionMaxDistance { get; init; } = 128;

    /// <summary>Epsilon of the RMS layer norms.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-6;

    /// <summary>"relu", "gelu", "gated-gelu", "gated-silu", ...: optional "gated-" prefix, then the activation.</summary>
    public string FeedForwardProj { get; init; } = "relu";

    /// <summary>
    /// Activation as stored in config.json. When absent it is derived from <see cref="FeedForwardProj"/> (see
    /// <see cref="ActivationName"/>).
    /// </summary>
    public string? DenseActFn { get; init; }

    /// <summary>Gated feed-forward as stored in config.json; when absent derived from <see cref="FeedForwardProj"/>.</summary>
    public bool? IsGatedAct { get; init; }

    /// <summary>Padding token id (not used by the encoder itself).</summary>
    public int PadTokenId { get; init; }

    /// <summary>End-of-sequence token id (not used by the encoder itself).</summary>
    public int EosTokenId { get; init; } = 1;

    /// <summary>
    /// The feed-forward activation: <see cref="DenseActFn"/> when given, else the last part of
    /// <see cref="FeedForwardProj"/>, with "gated-gelu" meaning "gelu_new" (tanh GELU) as in transformers.
    /// </summary>
    [JsonIgnore]
    public string ActivationName => DenseActFn ?? (FeedForwardProj == "gated-gelu" ? "gelu_new" : FeedForwardProj.Split('-')[^1]);

    /// <summary>Whether the feed-forward is gated (wi_0, wi_1) or plain (wi).</summary>
    [JsonIgnore]
    public bool Gated => IsGatedAct ?? FeedForwardProj.Split('-')[0] == "gated";

    /// <summary>Throws <see cref="ArgumentException"/> when the config cannot describe a model.</summary>
    public void Validate()
    {
        Positive(VocabSize, "vocab_size");
        Positive(DModel, "d_model");
        Positive(DKv, "d_kv");
        Positive(DFf, "d_ff");
        Positive(NumLayers, "num_layers");
        Positive(NumHeads, "num_heads");
        Positive(RelativeAttentionNumBuckets, "relative_attention_num_buckets");
        Positive(RelativeAttentionMaxDistance, "relative_attention_max_distance");
        if (RelativeAttentionNumBuckets < 4)
            throw new ArgumentException($"{GetType().Name}: relative_attention_num_buckets must be at least 4, got {RelativeAttentionNumBuckets}.");
        if (RelativeAttentionMaxDistance <= RelativeAttentionNumBuckets / 4)
            throw new ArgumentException($"{GetType().Name}: relative_attention_max_distance {RelativeAttentionMaxDistance} must exceed num_buckets / 4.");
        if (!(LayerNormEpsilon > 0)) throw new ArgumentException($"{GetType().Name}: layer_norm_epsilon must be positive, got {LayerNormEpsilon}.");
        var parts = FeedForwardProj.Split('-');
        if (parts.Length > 2 || (parts.Length == 2 && parts[0] != "gated"))
            throw new ArgumentException($"{GetType().Name}: feed_forward_proj '{FeedForwardProj}' is not of the form 'gated-<act>' or '<act>'.");
        HfActivations.Validate(ActivationName, "dense_act_fn");
    }

    private void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentException($"{GetType().Name}: {name} must be positive, got {value}.");
    }
}
