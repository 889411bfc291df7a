namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>FluxTransformer2DModel</c>. Property names map to the Python snake_case fields;
/// defaults are the diffusers constructor defaults (FLUX.1-schnell's shape; FLUX.1-dev adds guidance_embeds).
/// </summary>
public sealed record FluxTransformer2DModelConfig
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

    /// <summary>Width of the pooled text embedding (CLIP-L).</summary>
    public int PooledProjectionDim { get; init; } = 768;

    /// <summary>Whether the model embeds the guidance scale (guidance-distilled FLUX.1-dev).</summary>
    public bool GuidanceEmbeds { get; init; }

    /// <summary>Rotary widths of the three position axes (the first is unused by text-to-image: its ids are 0).</summary>
    public int[] AxesDimsRope { get; init; } = [16, 56, 56];

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Channels out as built.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int OutChannelsOrIn => OutChannels ?? InChannels;

    /// <summary>Checks that the values make a buildable model.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"Flux transformer config: {name} must be positive, got {v}.");
        }
        Positive(PatchSize, "patch_size");
        Positive(InChannels, "in_channels");
        if (OutChannels is int o) Positive(o, "out_channels");
        if (NumLayers < 0) throw new ArgumentException($"Flux transformer config: num_layers must not be negative, got {NumLayers}.");
        if (NumSingleLayers < 0) throw new ArgumentException($"Flux transformer config: num_single_layers must not be negative, got {NumSingleLayers}.");
        Positive(AttentionHeadDim, "attention_head_dim");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(JointAttentionDim, "joint_attention_dim");
        Positive(PooledProjectionDim, "pooled_projection_dim");
        if (AxesDimsRope is null || AxesDimsRope.Length == 0 || AxesDimsRope.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Flux transformer config: axes_dims_rope must be positive even widths, got [{string.Join(", ", AxesDimsRope ?? [])}].");
        if (AxesDimsRope.Sum() != AttentionHeadDim)
            throw new ArgumentException($"Flux transformer config: axes_dims_rope [{string.Join(", ", AxesDimsRope)}] must add up to attention_head_dim {AttentionHeadDim}.");
    }
}
