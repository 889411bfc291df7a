using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>GlmConfig</c> (<c>text_encoder/config.json</c> of CogView4: THUDM/glm-4-9b-hf's decoder). Property names
/// map to the snake_case fields; defaults are transformers' constructor defaults (GLM-4-9B's shape: 40 layers, 32 query /
/// 2 key-value heads of 128, half of each head rotary).
/// </summary>
public sealed record GlmConfig
{
    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; init; } = 151552;

    /// <summary>Model width.</summary>
    public int HiddenSize { get; init; } = 4096;

    /// <summary>MLP inner width.</summary>
    public int IntermediateSize { get; init; } = 13696;

    /// <summary>Decoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 40;

    /// <summary>Query heads.</summary>
    public int NumAttentionHeads { get; init; } = 32;

    /// <summary>Key / value heads (grouped-query attention); null means as many as the query heads.</summary>
    public int? NumKeyValueHeads { get; init; } = 2;

    /// <summary>Width of one head.</summary>
    public int HeadDim { get; init; } = 128;

    /// <summary>The fraction of each head that is rotated (the rest passes unrotated).</summary>
    public double PartialRotaryFactor { get; init; } = 0.5;

    /// <summary>The MLP's gate activation.</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>Longest sequence the rotary table was trained for (not a limit here).</summary>
    public int MaxPositionEmbeddings { get; init; } = 131072;

    /// <summary>RMS norm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1.5625e-07;

    /// <summary>Rotary base (older config files; newer ones may carry it in <see cref="RopeParameters"/>).</summary>
    public double RopeTheta { get; init; } = 10000.0;

    /// <summary>Rotary scaling; only the default rope (null) is implemented.</summary>
    public JsonElement? RopeScaling { get; init; }

    /// <summary>transformers 5's rope parameters (rope_type and rope_theta).</summary>
    public JsonElement? RopeParameters { get; init; }

    /// <summary>Whether q / k / v carry biases (o_proj never does).</summary>
    public bool AttentionBias { get; init; } = true;

    /// <summary>The padding token (the tokenizer's pad id).</summary>
    public int? PadTokenId { get; init; } = 151329;

    /// <summary>Dropout in attention (inference: none).</summary>
    public double AttentionDropout { get; init; }

    /// <summary>Key / value heads, resolved.</summary>
    [JsonIgnore]
    public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;

    /// <summary>The rotated width of a head: <c>int(head_dim × partial_rotary_factor)</c>.</summary>
    [JsonIgnore]
    public int RotaryDim => (int)(HeadDim * PartialRotaryFactor);

    /// <summary>The rotary base actually used (rope_parameters' rope_theta when present).</summary>
    [JsonIgnore]
    public double EffectiveRopeTheta => HfRope.Theta(RopeParameters, RopeTheta);

    /// <summary>Checks the values make a model whose forward runs.</summary>
    /// <exception cref="ArgumentException">A size is out of range.</exception>
    /// <exception cref="NotSupportedException">A rotary scaling other than the default.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"GlmConfig: {name} must be positive, got {v}.");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(KeyValueHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        if (NumAttentionHeads % KeyValueHeads != 0)
            throw new ArgumentException($"GlmConfig: num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {KeyValueHeads}.");
        if (RotaryDim < 2 || RotaryDim % 2 != 0 || RotaryDim > HeadDim)
            throw new ArgumentException($"GlmConfig: the rotary width head_dim × partial_rotary_factor = {RotaryDim} must be even and within the head ({HeadDim}).");
        if (!(RmsNormEps > 0)) throw new ArgumentException($"GlmConfig: rms_norm_eps must be positive, got {RmsNormEps}.");
        HfActivations.Validate(HiddenAct, "hidden_act");
        HfRope.RequireDefault("GlmConfig", EffectiveRopeTheta, RopeScaling, RopeParameters);
    }
}
