using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.IO;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// The language-model part of a <c>Qwen2_5_VLForConditionalGeneration</c> config.json (transformers'
/// <c>Qwen2_5_VLTextConfig</c>): top-level fields in checkpoints saved by transformers before 4.52 (Qwen/Qwen-Image's),
/// under <c>text_config</c> in newer ones (<see cref="Read"/> takes either). Defaults are Qwen2.5-VL-7B's. The vision
/// settings are not read: the Qwen-Image pipelines feed text only.
/// </summary>
public sealed record Qwen2_5_VLTextConfig
{
    /// <summary>Vocabulary rows of the embedding table.</summary>
    public int VocabSize { get; init; } = 152064;

    /// <summary>Model width.</summary>
    public int HiddenSize { get; init; } = 3584;

    /// <summary>MLP width.</summary>
    public int IntermediateSize { get; init; } = 18944;

    /// <summary>Decoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 28;

    /// <summary>Query heads.</summary>
    public int NumAttentionHeads { get; init; } = 28;

    /// <summary>Key / value heads (grouped-query attention).</summary>
    public int NumKeyValueHeads { get; init; } = 4;

    /// <summary>MLP activation.</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>Rotary base (transformers 4.x field; 5.x writes it inside <see cref="RopeParameters"/>).</summary>
    public double RopeTheta { get; init; } = 1000000.0;

    /// <summary>transformers 5.x rotary settings (<c>rope_type</c>, <c>rope_theta</c>, <c>mrope_section</c>).</summary>
    public JsonElement? RopeParameters { get; init; }

    /// <summary>The rotary base in effect: <c>rope_parameters.rope_theta</c> when the file has it, else <c>rope_theta</c>.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public double EffectiveRopeTheta => HfRope.Theta(RopeParameters, RopeTheta);

    /// <summary>transformers' rope_scaling: Qwen2.5-VL's multimodal rope (<c>mrope_section</c>) with the default rope type.</summary>
    public JsonElement? RopeScaling { get; init; }

    /// <summary>Sliding-window attention (not supported).</summary>
    public bool UseSlidingWindow { get; init; }

    /// <summary>Width of one head: hidden_size / num_attention_heads.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>
    /// Reads <paramref name="configPath"/>: its <c>text_config</c> object if there is one (the vocabulary size falls back to
    /// the top level, where older checkpoints keep it), else the top level.
    /// </summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    public static Qwen2_5_VLTextConfig Read(string configPath)
    {
        if (!File.Exists(configPath)) throw new FileNotFoundException($"No config.json at {configPath}.", configPath);
        var root = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject
            ?? throw new InvalidDataException($"{configPath} is not a JSON object.");
        if (root["text_config"] is JsonObject text)
        {
            var merged = (JsonObject)text.DeepClone();
            if (merged["vocab_size"] is null && root["vocab_size"] is { } vocab) merged["vocab_size"] = vocab.DeepClone();
            return ConfigJson.Parse<Qwen2_5_VLTextConfig>(merged.ToJsonString());
        }
        return ConfigJson.Parse<Qwen2_5_VLTextConfig>(root.ToJsonString());
    }

    /// <summary>Checks that the values make a model DiffusersSharp runs.</summary>
    /// <exception cref="ArgumentException">A size is inconsistent.</exception>
    /// <exception cref="NotSupportedException">A rope type other than the default, or sliding-window attention.</exception>
    public void Validate()
    {
        static void Positive(int value, string name)
        {
            if (value <= 0) throw new ArgumentException($"Qwen2.5-VL text config: {name} must be positive, got {value}.");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        if (HiddenSize % NumAttentionHeads != 0 || HeadDim % 2 != 0)
            throw new ArgumentException($"Qwen2.5-VL text config: hidden_size {HiddenSize} must split into {NumAttentionHeads} heads of an even width.");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new ArgumentException($"Qwen2.5-VL text config: num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {NumKeyValueHeads}.");
        if (!(RmsNormEps > 0)) throw new ArgumentException($"Qwen2.5-VL text config: rms_norm_eps must be positive, got {RmsNormEps}.");
        if (!(EffectiveRopeTheta > 0) || double.IsInfinity(EffectiveRopeTheta))
            throw new ArgumentException($"Qwen2.5-VL text config: rope_theta must be a positive number, got {EffectiveRopeTheta}.");
        HfActivations.Validate(HiddenAct, "hidden_act");
        // For text the multimodal rope's sections all take the same positions, so only the rope type matters here.
        foreach (var value in new[] { RopeScaling, RopeParameters })
        {
            if (value is not { ValueKind: JsonValueKind.Object } r) continue;
            string? kind = r.TryGetProperty("rope_type", out var rt) ? rt.GetString() : r.TryGetProperty("type", out var ty) ? ty.GetString() : null;
            if (kind is not (null or "default" or "mrope"))
                throw new NotSupportedException($"Qwen2.5-VL text config: rope type '{kind}' is not supported (only the default multimodal rope).");
        }
        if (UseSlidingWindow) throw new NotSupportedException("Qwen2.5-VL text config: use_sliding_window is not supported (only full attention).");
    }
}
