namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>SanaTransformer2DModel</c> (diffusers v0.39.0). Property names map to the Python
/// snake_case fields; defaults are the diffusers constructor defaults (Sana 1600M at 1024 px: 20 layers, 70 heads × 32,
/// 20 cross-attention heads × 112, Gemma-2 captions 2304 wide, no position embedding).
/// </summary>
public sealed record SanaTransformer2DModelConfig
{
    /// <summary>Latent channels in (32: DC-AE's latent).</summary>
    public int InChannels { get; init; } = 32;

    /// <summary>Channels out (null: <see cref="InChannels"/>, as diffusers' <c>out_channels or in_channels</c>).</summary>
    public int? OutChannels { get; init; } = 32;

    /// <summary>Heads of the linear self-attention.</summary>
    public int NumAttentionHeads { get; init; } = 70;

    /// <summary>Width of one self-attention head (inner width = heads × head dim).</summary>
    public int AttentionHeadDim { get; init; } = 32;

    /// <summary>Number of transformer blocks.</summary>
    public int NumLayers { get; init; } = 20;

    /// <summary>Heads of the cross-attention.</summary>
    public int? NumCrossAttentionHeads { get; init; } = 20;

    /// <summary>Width of one cross-attention head.</summary>
    public int? CrossAttentionHeadDim { get; init; } = 112;

    /// <summary>Width of the cross-attention's key/value source: the projected caption, so the inner width.</summary>
    public int? CrossAttentionDim { get; init; } = 2240;

    /// <summary>Width of the caption embeddings (Gemma-2's hidden size).</summary>
    public int CaptionChannels { get; init; } = 2304;

    /// <summary>GLUMBConv expansion: hidden channels <c>int(mlp_ratio × inner width)</c>.</summary>
    public double MlpRatio { get; init; } = 2.5;

    /// <summary>Dropout (inference ignores it).</summary>
    public double Dropout { get; init; }

    /// <summary>Whether the self-attention's to_q / to_k / to_v have a bias (the cross-attention's always do).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Latent side the model was trained at (sets the sin-cos position scale, <c>base_size = sample_size / patch_size</c>).</summary>
    public int SampleSize { get; init; } = 32;

    /// <summary>Patch side.</summary>
    public int PatchSize { get; init; } = 1;

    /// <summary>Whether each block's norm2 (before the feed-forward) has weight and bias; norm1 never has.</summary>
    public bool NormElementwiseAffine { get; init; }

    /// <summary>The blocks' LayerNorm epsilon.</summary>
    public double NormEps { get; init; } = 1e-6;

    /// <summary>Divides the sin-cos positions; null: no position embedding at all (Sana at 512 / 1024 px).</summary>
    public double? InterpolationScale { get; init; }

    /// <summary>Whether the timestep embedding adds an embedded guidance scale (Sana Sprint).</summary>
    public bool GuidanceEmbeds { get; init; }

    /// <summary>What SanaSprintPipeline multiplies the guidance scale by before passing it (unused by the model).</summary>
    public double GuidanceEmbedsScale { get; init; } = 0.1;

    /// <summary>q / k normalisation of both attentions: null or "rms_norm_across_heads" (Sana 1.5, Sana Sprint).</summary>
    public string? QkNorm { get; init; }

    /// <summary>What SanaPipeline multiplies the timestep by before passing it (unused by the model).</summary>
    public double TimestepScale { get; init; } = 1.0;

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Channels out as built.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int OutChannelsOrIn => OutChannels is int o && o != 0 ? o : InChannels;

    /// <summary>GLUMBConv's hidden channels, <c>int(mlp_ratio × inner width)</c> (truncated, as Python's int()).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int FeedForwardHiddenDim => (int)(MlpRatio * InnerDim);

    /// <summary>Checks that the values make a buildable model.</summary>
    /// <exception cref="ArgumentException">A field is out of range or unsupported, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"Sana transformer config: {name} must be positive, got {v}.");
        }
        Positive(InChannels, "in_channels");
        if (OutChannels is int o && o != 0) Positive(o, "out_channels");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(AttentionHeadDim, "attention_head_dim");
        if (NumLayers < 0) throw new ArgumentException($"Sana transformer config: num_layers must not be negative, got {NumLayers}.");
        // diffusers builds no cross-attention (and no norm2) without cross_attention_dim, then fails in forward on the
        // missing norm2: such a config cannot run there either.
        if (CrossAttentionDim is not int cad || NumCrossAttentionHeads is not int ch || CrossAttentionHeadDim is not int chd)
            throw new ArgumentException("Sana transformer config: cross_attention_dim, num_cross_attention_heads and cross_attention_head_dim are required (diffusers' blocks cannot run without the cross-attention).");
        Positive(ch, "num_cross_attention_heads");
        Positive(chd, "cross_attention_head_dim");
        // The caption is projected to the inner width before the cross-attention reads it.
        if (cad != InnerDim)
            throw new ArgumentException($"Sana transformer config: the caption is projected to the inner width {InnerDim} (heads × head dim), so cross_attention_dim must be {InnerDim}, got {cad}.");
        Positive(CaptionChannels, "caption_channels");
        Positive(SampleSize, "sample_size");
        Positive(PatchSize, "patch_size");
        if (!(MlpRatio > 0) || FeedForwardHiddenDim < 1)
            throw new ArgumentException($"Sana transformer config: mlp_ratio must give at least one hidden channel, got {MlpRatio}.");
        if (!(NormEps > 0)) throw new ArgumentException($"Sana transformer config: norm_eps must be positive, got {NormEps}.");
        if (QkNorm is not (null or "rms_norm_across_heads"))
            throw new ArgumentException($"Sana transformer config: qk_norm '{QkNorm}' is not supported; Sana uses null or 'rms_norm_across_heads'.");
        if (InterpolationScale is double s)
        {
            if (!(s > 0)) throw new ArgumentException($"Sana transformer config: interpolation_scale must be positive (or null for no position embedding), got {s}.");
            if (InnerDim % 4 != 0)
                throw new ArgumentException($"Sana transformer config: the inner width {InnerDim} must be divisible by 4 for the sin-cos positions.");
        }
    }
}
