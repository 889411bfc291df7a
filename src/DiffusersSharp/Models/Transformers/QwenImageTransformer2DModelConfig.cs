namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>QwenImageTransformer2DModel</c>. Property names map to the Python snake_case
/// fields; defaults are the diffusers constructor defaults (Qwen/Qwen-Image's shape: 60 dual-stream blocks, 24 heads of
/// 128, Qwen2.5-VL-7B's 3584-wide text).
/// </summary>
public sealed record QwenImageTransformer2DModelConfig
{
    /// <summary>Patch side of the packed latents (the pipeline packs 2×2 latent patches into the channels).</summary>
    public int PatchSize { get; init; } = 2;

    /// <summary>Channels of a packed token (16 latent channels × 2 × 2).</summary>
    public int InChannels { get; init; } = 64;

    /// <summary>Latent channels out per patch position (null: <see cref="InChannels"/>).</summary>
    public int? OutChannels { get; init; } = 16;

    /// <summary>Number of dual-stream blocks.</summary>
    public int NumLayers { get; init; } = 60;

    /// <summary>Width of one attention head (must equal the sum of <see cref="AxesDimsRope"/>).</summary>
    public int AttentionHeadDim { get; init; } = 128;

    /// <summary>Number of attention heads (inner width = heads × head dim).</summary>
    public int NumAttentionHeads { get; init; } = 24;

    /// <summary>Width of the text-encoder hidden states (Qwen2.5-VL-7B: 3584).</summary>
    public int JointAttentionDim { get; init; } = 3584;

    /// <summary>diffusers keeps this flag (marked for removal) but its guidance path does not run: only false is supported.</summary>
    public bool GuidanceEmbeds { get; init; }

    /// <summary>Rotary widths of the frame, height and width axes.</summary>
    public int[] AxesDimsRope { get; init; } = [16, 56, 56];

    /// <summary>Qwen-Image-Edit-2511's per-token modulation of reference images (not supported: must be false).</summary>
    public bool ZeroCondT { get; init; }

    /// <summary>Qwen-Image-Layered's extra timestep condition (not supported: must be false).</summary>
    public bool UseAdditionalTCond { get; init; }

    /// <summary>Qwen-Image-Layered's layer-wise 3-D rotary positions (not supported: must be false).</summary>
    public bool UseLayer3dRope { get; init; }

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Latent channels out as built.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int OutChannelsOrIn => OutChannels ?? InChannels;

    /// <summary>Checks that the values make a buildable model of the supported variants.</summary>
    /// <exception cref="ArgumentException">A field is out of range or names an unsupported variant.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"Qwen-Image transformer config: {name} must be positive, got {v}.");
        }
        Positive(PatchSize, "patch_size");
        Positive(InChannels, "in_channels");
        if (OutChannels is int o) Positive(o, "out_channels");
        if (NumLayers < 0) throw new ArgumentException($"Qwen-Image transformer config: num_layers must not be negative, got {NumLayers}.");
        Positive(AttentionHeadDim, "attention_head_dim");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(JointAttentionDim, "joint_attention_dim");
        if (AxesDimsRope is null || AxesDimsRope.Length != 3 || AxesDimsRope.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Qwen-Image transformer config: axes_dims_rope must be three positive even widths, got [{string.Join(", ", AxesDimsRope ?? [])}].");
        if (AxesDimsRope.Sum() != AttentionHeadDim)
            throw new ArgumentException($"Qwen-Image transformer config: axes_dims_rope [{string.Join(", ", AxesDimsRope)}] must add up to attention_head_dim {AttentionHeadDim}.");
        if (GuidanceEmbeds)
            throw new ArgumentException("Qwen-Image transformer config: guidance_embeds true is not supported (diffusers' guidance path for this model does not run either).");
        if (ZeroCondT || UseAdditionalTCond || UseLayer3dRope)
            throw new ArgumentException("Qwen-Image transformer config: zero_cond_t, use_additional_t_cond and use_layer3d_rope (Qwen-Image-Edit-2511, Qwen-Image-Layered) are not supported; text-to-image models leave them false.");
    }
}
