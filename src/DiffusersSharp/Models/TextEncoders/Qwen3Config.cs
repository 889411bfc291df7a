using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>Qwen3Config</c> (a text encoder's <c>config.json</c>; Z-Image's text_encoder is Qwen3-4B). Defaults
/// are the Python constructor's (Qwen3-8B-like), not Qwen3-4B's: Z-Image's folder sets every size. Fields of the causal-LM
/// head and of generation are ignored.
/// </summary>
public sealed record Qwen3Config
{
    /// <summary>Rows of the token embedding table (Qwen pads it beyond the tokenizer's ids).</summary>
    public int VocabSize { get; init; } = 151936;

    /// <summary>Width of the residual stream.</summary>
    public int HiddenSize { get; init; } = 4096;

    /// <summary>Width of the SwiGLU MLP's hidden layer.</summary>
    public int IntermediateSize { get; init; } = 22016;

    /// <summary>Number of decoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 32;

    /// <summary>Query heads per layer.</summary>
    public int NumAttentionHeads { get; init; } = 32;

    /// <summary>Key / value heads per layer (grouped-query attention); null means one per query head.</summary>
    public int? NumKeyValueHeads { get; init; } = 32;

    /// <summary>Width of one head; in Qwen3 not hidden_size / heads (Qwen3-4B: 2560 / 32 = 80, head_dim 128).</summary>
    public int HeadDim { get; init; } = 128;

    /// <summary>MLP activation of the gate projection ("silu").</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>Longest sequence the model was trained for (informative: rotary embeddings have no table).</summary>
    public int MaxPositionEmbeddings { get; init; } = 32768;

    /// <summary>Epsilon of every RMS norm.</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>Whether the causal-LM head shares the token embedding (no head here; kept for the record).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Base of the rotary frequencies (transformers 4.x field; 5.x writes it inside <see cref="RopeParameters"/>).</summary>
    public double RopeTheta { get; init; } = 10000.0;

    /// <summary>transformers 4.x rotary scaling (<c>{"rope_type": ...}</c>); null or "default" is all that is implemented.</summary>
    public JsonElement? RopeScaling { get; init; }

    /// <summary>transformers 5.x rotary settings (<c>{"rope_type": ..., "rope_theta": ...}</c>), when the file has them.</summary>
    public JsonElement? RopeParameters { get; init; }

    /// <summary>Whether q / k / v / o projections have biases (false in Qwen3).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Sliding-window attention for layers from <see cref="MaxWindowLayers"/> on (not implemented; off in Qwen3).</summary>
    public bool UseSlidingWindow { get; init; }

    /// <summary>Window of sliding-window attention (only used with <see cref="UseSlidingWindow"/>).</summary>
    public int? SlidingWindow { get; init; } = 4096;

    /// <summary>Layers before this one use full attention when sliding windows are on.</summary>
    public int MaxWindowLayers { get; init; } = 28;

    /// <summary>Per-layer attention kinds (transformers 4.53+); only "full_attention" is implemented.</summary>
    public IReadOnlyList<string>? LayerTypes { get; init; }

    /// <summary>Attention dropout (training only; ignored).</summary>
    public double AttentionDropout { get; init; }

    /// <summary>Key / value heads, <see cref="NumKeyValueHeads"/> or one per query head.</summary>
    [JsonIgnore]
    public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;

    /// <summary>The rotary base in effect: <c>rope_parameters.rope_theta</c> when the file has it, else <c>rope_theta</c>.</summary>
    [JsonIgnore]
    public double EffectiveRopeTheta => HfRope.Theta(RopeParameters, RopeTheta);

    /// <summary>
    /// Throws when the config cannot describe a model this port runs: <see cref="ArgumentException"/> for inconsistent
    /// sizes, <see cref="NotSupportedException"/> for rotary scaling kinds and sliding-window attention, which are not
    /// implemented.
    /// </summary>
    public void Validate()
    {
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(KeyValueHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        if (NumAttentionHeads % KeyValueHeads != 0)
            throw new ArgumentException($"Qwen3Config: num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {KeyValueHeads}.");
        if (HeadDim % 2 != 0) throw new ArgumentException($"Qwen3Config: head_dim must be even for rotary embeddings, got {HeadDim}.");
        if (!(RmsNormEps > 0)) throw new ArgumentException($"Qwen3Config: rms_norm_eps must be positive, got {RmsNormEps}.");
        HfActivations.Validate(HiddenAct, "hidden_act");
        HfRope.RequireDefault("Qwen3Config", EffectiveRopeTheta, RopeScaling, RopeParameters);
        if (UseSlidingWindow && SlidingWindow is not null)
            throw new NotSupportedException("Qwen3Config: use_sliding_window is not supported by DiffusersSharp (only full attention is implemented).");
        if (LayerTypes is { } types)
        {
            if (types.Count != NumHiddenLayers)
                throw new ArgumentException($"Qwen3Config: layer_types has {types.Count} entries for {NumHiddenLayers} layers.");
            if (types.FirstOrDefault(t => t != "full_attention") is { } other)
                throw new NotSupportedException($"Qwen3Config: layer type '{other}' is not supported by DiffusersSharp (only full_attention is implemented).");
        }
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentException($"Qwen3Config: {name} must be positive, got {value}.");
    }
}
