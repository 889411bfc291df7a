namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// transformers' <c>CLIPTextConfig</c> (a text encoder's <c>config.json</c>). Defaults are the Python constructor's,
/// not SD3's: the SD3 folders set hidden size, layers, heads, activation and <c>eos_token_id = 2</c>.
/// </summary>
public sealed record CLIPTextConfig
{
    /// <summary>Token vocabulary size.</summary>
    public int VocabSize { get; init; } = 49408;

    /// <summary>Width of the residual stream.</summary>
    public int HiddenSize { get; init; } = 512;

    /// <summary>Width of the MLP's hidden layer.</summary>
    public int IntermediateSize { get; init; } = 2048;

    /// <summary>Output width of <c>text_projection</c> (with-projection model only).</summary>
    public int ProjectionDim { get; init; } = 512;

    /// <summary>Number of encoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>Attention heads per layer.</summary>
    public int NumAttentionHeads { get; init; } = 8;

    /// <summary>Longest input (number of learned positions).</summary>
    public int MaxPositionEmbeddings { get; init; } = 77;

    /// <summary>MLP activation: "quick_gelu" (CLIP-L), "gelu" (exact, OpenCLIP bigG), or another transformers name.</summary>
    public string HiddenAct { get; init; } = "quick_gelu";

    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-5;

    /// <summary>Padding token id (not used by the model itself).</summary>
    public int PadTokenId { get; init; } = 1;

    /// <summary>Start-of-text token id (not used by the model itself).</summary>
    public int BosTokenId { get; init; } = 49406;

    /// <summary>
    /// End-of-text token id. It picks the pooled position: 2 (the legacy value every SD checkpoint carries) means
    /// "the largest id", otherwise the first occurrence of this id.
    /// </summary>
    public int EosTokenId { get; init; } = 49407;

    /// <summary>Throws <see cref="ArgumentException"/> when the config cannot describe a model.</summary>
    public void Validate()
    {
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(ProjectionDim, "projection_dim");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ArgumentException($"CLIPTextConfig: hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}.");
        if (!(LayerNormEps > 0)) throw new ArgumentException($"CLIPTextConfig: layer_norm_eps must be positive, got {LayerNormEps}.");
        HfActivations.Validate(HiddenAct, "hidden_act");
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentException($"CLIPTextConfig: {name} must be positive, got {value}.");
    }
}
