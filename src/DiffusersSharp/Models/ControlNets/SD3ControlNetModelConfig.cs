namespace DiffusersSharp.Models.ControlNets;

/// <summary>
/// <c>config.json</c> of diffusers' <c>SD3ControlNetModel</c>. Property names map to the Python snake_case fields; defaults
/// are the diffusers constructor defaults. <see cref="JointAttentionDim"/> null is the SD3.5 kind (no text input,
/// single-stream blocks).
/// </summary>
public sealed record SD3ControlNetModelConfig
{
    /// <summary>Configured latent side (sets the position-embedding scale).</summary>
    public int SampleSize { get; init; } = 128;

    /// <summary>Patch side in latent pixels.</summary>
    public int PatchSize { get; init; } = 2;

    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 16;

    /// <summary>Number of blocks (each gives one residual).</summary>
    public int NumLayers { get; init; } = 18;

    /// <summary>Width of one attention head.</summary>
    public int AttentionHeadDim { get; init; } = 64;

    /// <summary>Number of attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 18;

    /// <summary>Width of the text sequence; null: no <c>context_embedder</c> and single-stream blocks (SD3.5 ControlNets).</summary>
    public int? JointAttentionDim { get; init; } = 4096;

    /// <summary>Output width of <c>context_embedder</c> (must equal the inner width for the joint blocks).</summary>
    public int CaptionProjectionDim { get; init; } = 1152;

    /// <summary>Width of the pooled text embedding.</summary>
    public int PooledProjectionDim { get; init; } = 2048;

    /// <summary>Stored by diffusers, unused by the ControlNet.</summary>
    public int? OutChannels { get; init; } = 16;

    /// <summary>Side of the stored position table in tokens.</summary>
    public int? PosEmbedMaxSize { get; init; } = 96;

    /// <summary>Control-input channels beyond <see cref="InChannels"/> taken by <c>pos_embed_input</c>.</summary>
    public int ExtraConditioningChannels { get; init; }

    /// <summary>Joint blocks that also run the second self-attention (SD3.5).</summary>
    public int[] DualAttentionLayers { get; init; } = [];

    /// <summary>"rms_norm" for query/key RMSNorm in the joint blocks, or null.</summary>
    public string? QkNorm { get; init; }

    /// <summary>"sincos" or null (no position embedding in <c>pos_embed</c>).</summary>
    public string? PosEmbedType { get; init; } = "sincos";

    /// <summary>Whether the latent is patchified by <c>pos_embed</c>; false: the caller passes tokens [B, N, D].</summary>
    public bool UsePosEmbed { get; init; } = true;

    /// <summary>
    /// The pipeline gives the ControlNet zero pooled projections and encodes the control image without the VAE shift
    /// (the InstantX ControlNets); false: the pooled prompt embeddings and the shift (SD3.5 ControlNets).
    /// </summary>
    public bool ForceZerosForPooledProjection { get; init; } = true;

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Checks that the values make a buildable model.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"SD3 ControlNet config: {name} must be positive, got {v}.");
        }
        Positive(SampleSize, "sample_size");
        Positive(PatchSize, "patch_size");
        Positive(InChannels, "in_channels");
        Positive(NumLayers, "num_layers");
        Positive(AttentionHeadDim, "attention_head_dim");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(PooledProjectionDim, "pooled_projection_dim");
        if (JointAttentionDim is int j) Positive(j, "joint_attention_dim");
        if (PosEmbedMaxSize is int p) Positive(p, "pos_embed_max_size");
        if (ExtraConditioningChannels < 0)
            throw new ArgumentException($"SD3 ControlNet config: extra_conditioning_channels must not be negative, got {ExtraConditioningChannels}.");
        if (PosEmbedType is not null && PosEmbedType != "sincos")
            throw new ArgumentException($"SD3 ControlNet config: pos_embed_type '{PosEmbedType}' is not supported (\"sincos\" or null).");
        if (QkNorm is not null && QkNorm != "rms_norm")
            throw new ArgumentException($"SD3 ControlNet config: qk_norm '{QkNorm}' is not supported (only \"rms_norm\" or null).");
        if (JointAttentionDim is not null && CaptionProjectionDim != InnerDim)
            throw new ArgumentException($"SD3 ControlNet config: caption_projection_dim {CaptionProjectionDim} must equal the inner width {InnerDim} (heads x head dim) for the joint blocks.");
    }
}
