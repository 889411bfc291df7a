namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>PixArtTransformer2DModel</c>. Property names map to the Python snake_case fields;
/// defaults are the diffusers constructor defaults (PixArt-XL-2 at 1024: 28 layers, 16 heads × 72, sample size 128).
/// </summary>
public sealed record PixArtTransformer2DModelConfig
{
    /// <summary>Number of attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 16;

    /// <summary>Width of one head (inner width = heads × head dim).</summary>
    public int AttentionHeadDim { get; init; } = 72;

    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 4;

    /// <summary>Channels out (null: <see cref="InChannels"/>); 8 = twice the latent channels, the learned variance the pipeline drops.</summary>
    public int? OutChannels { get; init; } = 8;

    /// <summary>Number of transformer blocks.</summary>
    public int NumLayers { get; init; } = 28;

    /// <summary>Dropout (inference ignores it).</summary>
    public double Dropout { get; init; }

    /// <summary>Unused by PixArt (kept for config round trips).</summary>
    public int NormNumGroups { get; init; } = 32;

    /// <summary>Width of the key/value source of the cross-attention (the projected caption: the inner width).</summary>
    public int? CrossAttentionDim { get; init; } = 1152;

    /// <summary>Whether the attentions' to_q / to_k / to_v have a bias.</summary>
    public bool AttentionBias { get; init; } = true;

    /// <summary>Latent side the model was trained at (sets the position scale, the default size and the aspect-ratio bins).</summary>
    public int SampleSize { get; init; } = 128;

    /// <summary>Patch side.</summary>
    public int PatchSize { get; init; } = 2;

    /// <summary>Feed-forward activation ("gelu-approximate").</summary>
    public string ActivationFn { get; init; } = "gelu-approximate";

    /// <summary>Must be set for ada_norm_single (diffusers checks it; unused otherwise).</summary>
    public int? NumEmbedsAdaNorm { get; init; } = 1000;

    /// <summary>Unused by diffusers' default attention processor (kept for config round trips).</summary>
    public bool UpcastAttention { get; init; }

    /// <summary>Norm type of the blocks: only "ada_norm_single" exists for PixArt.</summary>
    public string NormType { get; init; } = "ada_norm_single";

    /// <summary>Whether the blocks' LayerNorms have weight and bias.</summary>
    public bool NormElementwiseAffine { get; init; }

    /// <summary>The blocks' LayerNorm epsilon.</summary>
    public double NormEps { get; init; } = 1e-6;

    /// <summary>Divides the sin-cos positions (null: <c>max(sample_size / 64, 1)</c>).</summary>
    public double? InterpolationScale { get; init; }

    /// <summary>Whether the timestep embedding adds resolution and aspect-ratio embeddings (null: sample_size == 128).</summary>
    public bool? UseAdditionalConditions { get; init; }

    /// <summary>Width of the caption (T5 d_model) projected by caption_projection; null: no projection.</summary>
    public int? CaptionChannels { get; init; }

    /// <summary>Attention type: only "default" is implemented.</summary>
    public string? AttentionType { get; init; } = "default";

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Channels out as built.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int OutChannelsOrIn => OutChannels ?? InChannels;

    /// <summary>Whether the model takes resolution / aspect-ratio micro-conditions, as diffusers resolves it.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool UsesAdditionalConditions => UseAdditionalConditions ?? SampleSize == 128;

    /// <summary>The position interpolation scale as diffusers resolves it.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public double InterpolationScaleOrDefault => InterpolationScale ?? Math.Max(SampleSize / 64, 1);

    /// <summary>Checks that the values make a buildable model.</summary>
    /// <exception cref="ArgumentException">A field is out of range or unsupported, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"PixArt transformer config: {name} must be positive, got {v}.");
        }
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(AttentionHeadDim, "attention_head_dim");
        Positive(InChannels, "in_channels");
        if (OutChannels is int o) Positive(o, "out_channels");
        if (NumLayers < 0) throw new ArgumentException($"PixArt transformer config: num_layers must not be negative, got {NumLayers}.");
        Positive(SampleSize, "sample_size");
        Positive(PatchSize, "patch_size");
        if (NormType != "ada_norm_single")
            throw new ArgumentException($"PixArt transformer config: norm_type '{NormType}' is not implemented (diffusers implements only ada_norm_single).");
        if (NumEmbedsAdaNorm is null)
            throw new ArgumentException("PixArt transformer config: num_embeds_ada_norm cannot be null with norm_type ada_norm_single.");
        if (AttentionType is not (null or "default"))
            throw new ArgumentException($"PixArt transformer config: attention_type '{AttentionType}' is not supported; only 'default' is.");
        if (InnerDim % 4 != 0)
            throw new ArgumentException($"PixArt transformer config: the inner width {InnerDim} (heads × head dim) must be divisible by 4 for the sin-cos positions.");
        if (CaptionChannels is int cc)
        {
            Positive(cc, "caption_channels");
            if (CrossAttentionDim != InnerDim)
                throw new ArgumentException($"PixArt transformer config: with caption_channels the caption is projected to the inner width {InnerDim}, so cross_attention_dim must be {InnerDim}, got {CrossAttentionDim?.ToString() ?? "null"}.");
        }
        else if (CrossAttentionDim is int cad) Positive(cad, "cross_attention_dim");
        if (!(InterpolationScaleOrDefault > 0))
            throw new ArgumentException($"PixArt transformer config: interpolation_scale must be positive, got {InterpolationScale}.");
        if (!(NormEps > 0)) throw new ArgumentException($"PixArt transformer config: norm_eps must be positive, got {NormEps}.");
    }
}
