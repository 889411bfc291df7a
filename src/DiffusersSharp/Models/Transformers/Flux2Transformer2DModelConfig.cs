namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>Flux2Transformer2DModel</c> (FLUX.2). Property names map to the Python
/// snake_case fields; defaults are the diffusers constructor defaults, which are FLUX.2 [dev]'s shape (8 double-stream
/// and 48 single-stream blocks, 48 heads of 128, Mistral-Small's 3 × 5120-wide text, the guidance embedding).
/// FLUX.2 [klein] 4B is 5 + 20 blocks, 24 heads, 7680-wide text (Qwen3-4B's 3 × 2560), guidance_embeds false.
/// </summary>
public sealed record Flux2Transformer2DModelConfig
{
    /// <summary>Patch side (1: the pipeline patchifies 2×2 latent patches into the channels itself).</summary>
    public int PatchSize { get; init; } = 1;

    /// <summary>Channels of a packed token (32 latent channels × 2 × 2).</summary>
    public int InChannels { get; init; } = 128;

    /// <summary>Channels out (null: <see cref="InChannels"/>).</summary>
    public int? OutChannels { get; init; }

    /// <summary>Number of double-stream blocks.</summary>
    public int NumLayers { get; init; } = 8;

    /// <summary>Number of single-stream (parallel) blocks.</summary>
    public int NumSingleLayers { get; init; } = 48;

    /// <summary>Width of one attention head (must equal the sum of <see cref="AxesDimsRope"/>).</summary>
    public int AttentionHeadDim { get; init; } = 128;

    /// <summary>Number of attention heads (inner width = heads × head dim).</summary>
    public int NumAttentionHeads { get; init; } = 48;

    /// <summary>Width of the text-encoder sequence (stacked hidden states of the text model).</summary>
    public int JointAttentionDim { get; init; } = 15360;

    /// <summary>Width of the sinusoidal timestep (and guidance) features.</summary>
    public int TimestepGuidanceChannels { get; init; } = 256;

    /// <summary>Feed-forward width per model width: the hidden width is <c>int(inner_dim × mlp_ratio)</c>.</summary>
    public double MlpRatio { get; init; } = 3.0;

    /// <summary>Rotary widths of the position axes (FLUX.2: t, h, w, l).</summary>
    public int[] AxesDimsRope { get; init; } = [32, 32, 32, 32];

    /// <summary>Rotary base.</summary>
    public double RopeTheta { get; init; } = 2000;

    /// <summary>Epsilon of every LayerNorm and of the q / k RMSNorms.</summary>
    public double Eps { get; init; } = 1e-6;

    /// <summary>Whether the model embeds the guidance scale (guidance-distilled FLUX.2 [dev]; [klein] has none).</summary>
    public bool GuidanceEmbeds { get; init; } = true;

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Channels out as built.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int OutChannelsOrIn => OutChannels ?? InChannels;

    /// <summary>The feed-forward hidden width, <c>int(inner_dim × mlp_ratio)</c> as diffusers computes it.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public long MlpHiddenDim => (long)(InnerDim * MlpRatio);

    /// <summary>Checks that the values make a buildable model.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"Flux2 transformer config: {name} must be positive, got {v}.");
        }
        Positive(PatchSize, "patch_size");
        Positive(InChannels, "in_channels");
        if (OutChannels is int o) Positive(o, "out_channels");
        if (NumLayers < 0) throw new ArgumentException($"Flux2 transformer config: num_layers must not be negative, got {NumLayers}.");
        if (NumSingleLayers < 0) throw new ArgumentException($"Flux2 transformer config: num_single_layers must not be negative, got {NumSingleLayers}.");
        Positive(AttentionHeadDim, "attention_head_dim");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(JointAttentionDim, "joint_attention_dim");
        if (TimestepGuidanceChannels < 2 || TimestepGuidanceChannels % 2 != 0)
            throw new ArgumentException($"Flux2 transformer config: timestep_guidance_channels must be a positive even number, got {TimestepGuidanceChannels}.");
        if (!double.IsFinite(MlpRatio) || MlpRatio <= 0 || MlpHiddenDim < 1)
            throw new ArgumentException($"Flux2 transformer config: mlp_ratio must be positive and give a feed-forward width of at least 1, got {MlpRatio}.");
        if (AxesDimsRope is null || AxesDimsRope.Length == 0 || AxesDimsRope.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Flux2 transformer config: axes_dims_rope must be positive even widths, got [{string.Join(", ", AxesDimsRope ?? [])}].");
        if (AxesDimsRope.Sum() != AttentionHeadDim)
            throw new ArgumentException($"Flux2 transformer config: axes_dims_rope [{string.Join(", ", AxesDimsRope)}] must add up to attention_head_dim {AttentionHeadDim}.");
        if (!double.IsFinite(RopeTheta) || RopeTheta <= 0)
            throw new ArgumentException($"Flux2 transformer config: rope_theta must be a positive number, got {RopeTheta}.");
        if (!double.IsFinite(Eps) || Eps <= 0)
            throw new ArgumentException($"Flux2 transformer config: eps must be a positive number, got {Eps}.");
    }
}
