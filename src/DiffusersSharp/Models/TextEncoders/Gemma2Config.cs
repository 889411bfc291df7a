using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>Gemma2Config</c> (a text encoder's <c>config.json</c>; Sana's text_encoder is the <c>Gemma2Model</c> of
/// gemma-2-2b-it). Defaults are the Python constructor's, which are gemma-2-2b's sizes. Fields of the causal-LM head
/// (<c>final_logit_softcapping</c>), of caching and of generation do not affect the encoder's output and are ignored.
/// </summary>
public sealed record Gemma2Config
{
    /// <summary>Rows of the token embedding table.</summary>
    public int VocabSize { get; init; } = 256000;

    /// <summary>Width of the residual stream; the embeddings are scaled by its square root.</summary>
    public int HiddenSize { get; init; } = 2304;

    /// <summary>Width of the GeGLU MLP's hidden layer.</summary>
    public int IntermediateSize { get; init; } = 9216;

    /// <summary>Number of decoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 26;

    /// <summary>Query heads per layer.</summary>
    public int NumAttentionHeads { get; init; } = 8;

    /// <summary>Key / value heads per layer (grouped-query attention).</summary>
    public int NumKeyValueHeads { get; init; } = 4;

    /// <summary>Width of one head (gemma-2-2b: 256, not hidden_size / heads = 288).</summary>
    public int HeadDim { get; init; } = 256;

    /// <summary>
    /// Activation of the MLP's gate projection ("gelu_pytorch_tanh": GeGLU). transformers' Gemma2 reads this field, not
    /// <c>hidden_act</c> (which gemma-2 configs also carry).
    /// </summary>
    public string HiddenActivation { get; init; } = "gelu_pytorch_tanh";

    /// <summary>Longest sequence the model was trained for (informative: rotary embeddings have no table).</summary>
    public int MaxPositionEmbeddings { get; init; } = 8192;

    /// <summary>Epsilon of every RMS norm.</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>Base of the rotary frequencies (transformers 4.x field; 5.x writes it inside <see cref="RopeParameters"/>).</summary>
    public double RopeTheta { get; init; } = 10000.0;

    /// <summary>transformers 4.x rotary scaling; null or "default" is all that is implemented (gemma-2 has none).</summary>
    public JsonElement? RopeScaling { get; init; }

    /// <summary>transformers 5.x rotary settings (<c>{"rope_type": ..., "rope_theta": ...}</c>), when the file has them.</summary>
    public JsonElement? RopeParameters { get; init; }

    /// <summary>Whether q / k / v / o projections have biases (false in gemma-2).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Attention dropout (training only; ignored).</summary>
    public double AttentionDropout { get; init; }

    /// <summary>Attention logits are scaled by <c>query_pre_attn_scalar^-0.5</c> (not head_dim^-0.5).</summary>
    public double QueryPreAttnScalar { get; init; } = 256;

    /// <summary>Keys a query of a sliding-window layer sees: itself and the <c>sliding_window - 1</c> before it.</summary>
    public int? SlidingWindow { get; init; } = 4096;

    /// <summary>Attention logits become <c>tanh(x / cap) · cap</c> before the mask; null turns that off.</summary>
    public double? AttnLogitSoftcapping { get; init; } = 50.0;

    /// <summary>Soft-capping of the causal-LM head's logits (no head here; kept for the record).</summary>
    public double? FinalLogitSoftcapping { get; init; } = 30.0;

    /// <summary>
    /// Per-layer attention kinds, "sliding_attention" or "full_attention" (transformers 4.53+ writes them); when absent,
    /// even layers (0, 2, ...) slide and odd ones attend globally, as transformers' Gemma2 alternates them.
    /// </summary>
    public IReadOnlyList<string>? LayerTypes { get; init; }

    /// <summary>transformers 5.x: attend to every token instead of causally (EmbeddingGemma); not implemented.</summary>
    public bool? UseBidirectionalAttention { get; init; }

    /// <summary>Whether the causal-LM head shares the token embedding (no head here; kept for the record).</summary>
    public bool TieWordEmbeddings { get; init; } = true;

    /// <summary>Id of the padding token (informative: padding is given by the attention mask).</summary>
    public int? PadTokenId { get; init; } = 0;

    /// <summary>The rotary base in effect: <c>rope_parameters.rope_theta</c> when the file has it, else <c>rope_theta</c>.</summary>
    [JsonIgnore]
    public double EffectiveRopeTheta => HfRope.Theta(RopeParameters, RopeTheta);

    /// <summary>Whether layer <paramref name="layer"/> uses sliding-window attention.</summary>
    public bool IsSliding(int layer) => LayerTypes is { } types ? types[layer] == "sliding_attention" : layer % 2 == 0;

    /// <summary>
    /// Throws when the config cannot describe a model this port runs: <see cref="ArgumentException"/> for inconsistent
    /// sizes, <see cref="NotSupportedException"/> for rotary scaling and bidirectional attention, which are not
    /// implemented.
    /// </summary>
    public void Validate()
    {
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new ArgumentException($"Gemma2Config: num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {NumKeyValueHeads}.");
        // transformers' Gemma2Attention refuses this too, although head_dim sets the heads' width.
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ArgumentException($"Gemma2Config: hidden_size {HiddenSize} is not a multiple of num_attention_heads {NumAttentionHeads}.");
        if (HeadDim % 2 != 0) throw new ArgumentException($"Gemma2Config: head_dim must be even for rotary embeddings, got {HeadDim}.");
        if (!(RmsNormEps > 0)) throw new ArgumentException($"Gemma2Config: rms_norm_eps must be positive, got {RmsNormEps}.");
        if (!(QueryPreAttnScalar > 0) || double.IsInfinity(QueryPreAttnScalar))
            throw new ArgumentException($"Gemma2Config: query_pre_attn_scalar must be a positive number, got {QueryPreAttnScalar}.");
        if (AttnLogitSoftcapping is { } cap && (!(cap > 0) || double.IsInfinity(cap)))
            throw new ArgumentException($"Gemma2Config: attn_logit_softcapping must be a positive number or null, got {cap}.");
        HfActivations.Validate(HiddenActivation, "hidden_activation");
        HfRope.RequireDefault("Gemma2Config", EffectiveRopeTheta, RopeScaling, RopeParameters);
        if (LayerTypes is { } types)
        {
            if (types.Count != NumHiddenLayers)
                throw new ArgumentException($"Gemma2Config: layer_types has {types.Count} entries for {NumHiddenLayers} layers.");
            if (types.FirstOrDefault(t => t is not ("sliding_attention" or "full_attention")) is { } other)
                throw new NotSupportedException($"Gemma2Config: layer type '{other}' is not supported by DiffusersSharp (sliding_attention and full_attention are).");
        }
        bool anySliding = Enumerable.Range(0, NumHiddenLayers).Any(IsSliding);
        if (anySliding && SlidingWindow is not > 0)
            throw new ArgumentException($"Gemma2Config: sliding_window must be a positive number of tokens for the sliding-window layers, got {SlidingWindow?.ToString() ?? "null"}.");
        if (UseBidirectionalAttention == true)
            throw new NotSupportedException("Gemma2Config: use_bidirectional_attention is not supported by DiffusersSharp (only causal attention is implemented).");
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentException($"Gemma2Config: {name} must be positive, got {value}.");
    }
}
