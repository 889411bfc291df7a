namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>SD3Transformer2DModel</c>. Property names map to the Python snake_case fields;
/// defaults are the diffusers constructor defaults, which differ from every released checkpoint (always read the file).
/// </summary>
public sealed record SD3Transformer2DModelConfig
{
    /// <summary>Configured latent side (sets the position-embedding scale <c>sample_size / patch_size</c>).</summary>
    public int SampleSize { get; init; } = 128;

    /// <summary>Patch side in latent pixels.</summary>
    public int PatchSize { get; init; } = 2;

    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 16;

    /// <summary>Number of joint transformer blocks.</summary>
    public int NumLayers { get; init; } = 18;

    /// <summary>Width of one attention head.</summary>
    public int AttentionHeadDim { get; init; } = 64;

    /// <summary>Number of attention heads (inner width = heads × head dim).</summary>
    public int NumAttentionHeads { get; init; } = 18;

    /// <summary>Width of the text-encoder sequence (T5 d_model).</summary>
    public int JointAttentionDim { get; init; } = 4096;

    /// <summary>Stored by diffusers but unused by the model (the context is projected to the inner width).</summary>
    public int CaptionProjectionDim { get; init; } = 1152;

    /// <summary>Width of the pooled text embedding.</summary>
    public int PooledProjectionDim { get; init; } = 2048;

    /// <summary>Latent channels out.</summary>
    public int OutChannels { get; init; } = 16;

    /// <summary>Side of the stored position table in tokens (null: computed for each latent).</summary>
    public int? PosEmbedMaxSize { get; init; } = 96;

    /// <summary>Blocks that also run a second self-attention on the image stream (SD3.5-Medium: 0..12).</summary>
    public int[] DualAttentionLayers { get; init; } = [];

    /// <summary>"rms_norm" for query/key RMSNorm (SD3.5), or null.</summary>
    public string? QkNorm { get; init; }

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Checks that the values make a buildable model.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"SD3 transformer config: {name} must be positive, got {v}.");
        }
        Positive(SampleSize, "sample_size");
        Positive(PatchSize, "patch_size");
        Positive(InChannels, "in_channels");
        Positive(NumLayers, "num_layers");
        Positive(AttentionHeadDim, "attention_head_dim");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(JointAttentionDim, "joint_attention_dim");
        Positive(PooledProjectionDim, "pooled_projection_dim");
        Positive(OutChannels, "out_channels");
        if (PosEmbedMaxSize is int p) Positive(p, "pos_embed_max_size");
        if (InnerDim % 4 != 0) throw new ArgumentException($"SD3 transformer config: the inner width {InnerDim} must be divisible by 4.");
        if (QkNorm is not null && QkNorm != "rms_norm")
            throw new ArgumentException($"SD3 transformer config: qk_norm '{QkNorm}' is not supported (only \"rms_norm\" or null).");
    }
}
