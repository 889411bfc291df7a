namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>ChromaTransformer2DModel</c>. Property names map to the Python snake_case fields;
/// defaults are the diffusers constructor defaults, which are Chroma1-HD's / Chroma1-Base's shape (19 double-stream and
/// 38 single-stream blocks of width 3072, T5-XXL text, a 5-layer approximator of width 5120).
/// </summary>
public sealed record ChromaTransformer2DModelConfig
{
    /// <summary>Patch side (1: the pipeline packs 2×2 latent patches into the channels itself).</summary>
    public int PatchSize { get; init; } = 1;

    /// <summary>Channels of a packed token (16 latent channels × 2 × 2).</summary>
    public int InChannels { get; init; } = 64;

    /// <summary>Channels out (null: <see cref="InChannels"/>).</summary>
    public int? OutChannels { get; init; }

    /// <summary>Number of double-stream blocks.</summary>
    public int NumLayers { get; init; } = 19;

    /// <summary>Number of single-stream blocks.</summary>
    public int NumSingleLayers { get; init; } = 38;

    /// <summary>Width of one attention head (must equal the sum of <see cref="AxesDimsRope"/>).</summary>
    public int AttentionHeadDim { get; init; } = 128;

    /// <summary>Number of attention heads (inner width = heads × head dim).</summary>
    public int NumAttentionHeads { get; init; } = 24;

    /// <summary>Width of the text-encoder sequence (T5 d_model).</summary>
    public int JointAttentionDim { get; init; } = 4096;

    /// <summary>Rotary widths of the three position axes.</summary>
    public int[] AxesDimsRope { get; init; } = [16, 56, 56];

    /// <summary>
    /// Width of the approximator's input: a quarter each for the timestep's and the (zero) guidance's sinusoidal features,
    /// half for the modulation index's (so a multiple of 8).
    /// </summary>
    public int ApproximatorNumChannels { get; init; } = 64;

    /// <summary>Hidden width of the approximator (<c>distilled_guidance_layer</c>).</summary>
    public int ApproximatorHiddenDim { get; init; } = 5120;

    /// <summary>Residual MLP layers of the approximator.</summary>
    public int ApproximatorLayers { get; init; } = 5;

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Channels out as built.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int OutChannelsOrIn => OutChannels ?? InChannels;

    /// <summary>
    /// Modulation vectors the approximator gives per sample (diffusers' <c>out_dim</c>): 3 per single-stream block, 6 per
    /// stream of each double-stream block, 2 for the output norm.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int ModulationCount => 3 * NumSingleLayers + 2 * 6 * NumLayers + 2;

    /// <summary>Checks that the values make a buildable model.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"Chroma transformer config: {name} must be positive, got {v}.");
        }
        Positive(PatchSize, "patch_size");
        Positive(InChannels, "in_channels");
        if (OutChannels is int o) Positive(o, "out_channels");
        if (NumLayers < 0) throw new ArgumentException($"Chroma transformer config: num_layers must not be negative, got {NumLayers}.");
        if (NumSingleLayers < 0) throw new ArgumentException($"Chroma transformer config: num_single_layers must not be negative, got {NumSingleLayers}.");
        Positive(AttentionHeadDim, "attention_head_dim");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(JointAttentionDim, "joint_attention_dim");
        Positive(ApproximatorHiddenDim, "approximator_hidden_dim");
        if (ApproximatorLayers < 0) throw new ArgumentException($"Chroma transformer config: approximator_layers must not be negative, got {ApproximatorLayers}.");
        // Each of the three sinusoidal parts needs an even width: num_channels // 4 (time, guidance) and 2 × that (index).
        if (ApproximatorNumChannels < 8 || ApproximatorNumChannels % 8 != 0)
            throw new ArgumentException($"Chroma transformer config: approximator_num_channels must be a positive multiple of 8 (its quarters are sinusoidal embeddings of even width), got {ApproximatorNumChannels}.");
        if (AxesDimsRope is null || AxesDimsRope.Length == 0 || AxesDimsRope.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Chroma transformer config: axes_dims_rope must be positive even widths, got [{string.Join(", ", AxesDimsRope ?? [])}].");
        if (AxesDimsRope.Sum() != AttentionHeadDim)
            throw new ArgumentException($"Chroma transformer config: axes_dims_rope [{string.Join(", ", AxesDimsRope)}] must add up to attention_head_dim {AttentionHeadDim}.");
    }
}
