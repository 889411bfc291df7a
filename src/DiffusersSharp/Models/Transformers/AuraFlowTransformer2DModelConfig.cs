using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>AuraFlowTransformer2DModel</c>. Property names map to the Python snake_case fields;
/// defaults are the diffusers constructor defaults (AuraFlow's shape, but <c>pos_embed_max_size</c> 1024 where the released
/// checkpoints set 4096 (v0.1) or 9216 (v0.3): always read the file).
/// </summary>
public sealed record AuraFlowTransformer2DModelConfig
{
    /// <summary>Configured latent side; stored by diffusers, it sizes nothing the forward uses (the position table is
    /// <see cref="PosEmbedMaxSize"/>).</summary>
    public int SampleSize { get; init; } = 64;

    /// <summary>Patch side in latent pixels.</summary>
    public int PatchSize { get; init; } = 2;

    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 4;

    /// <summary>Number of joint (MMDiT) blocks, run first.</summary>
    public int NumMmditLayers { get; init; } = 4;

    /// <summary>Number of single-stream DiT blocks on the concatenated text + image sequence, run after the joint ones.</summary>
    public int NumSingleDitLayers { get; init; } = 32;

    /// <summary>Width of one attention head.</summary>
    public int AttentionHeadDim { get; init; } = 256;

    /// <summary>Number of attention heads (inner width = heads × head dim).</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary>Width of the text-encoder states (Pile-T5-XL's d_model, 2048).</summary>
    public int JointAttentionDim { get; init; } = 2048;

    /// <summary>Width <c>context_embedder</c> projects the text to; it must be the inner width, as the register tokens
    /// (inner width) are joined to the projected text.</summary>
    public int CaptionProjectionDim { get; init; } = 3072;

    /// <summary>Latent channels out; null means <see cref="InChannels"/> (diffusers' constructor resolves it so).</summary>
    public int? OutChannels { get; init; } = 4;

    /// <summary>Rows of the learned position table: a square grid of <c>int(sqrt(pos_embed_max_size))</c> patches per side
    /// whose centred window is taken for each latent.</summary>
    public int PosEmbedMaxSize { get; init; } = 1024;

    /// <summary>Inner width: heads × head dim.</summary>
    [JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>The output channel count: <see cref="OutChannels"/>, or <see cref="InChannels"/> when it is null.</summary>
    [JsonIgnore]
    public int ResolvedOutChannels => OutChannels ?? InChannels;

    /// <summary>Side of the position grid, diffusers' <c>int(pos_embed_max_size ** 0.5)</c> (the table's rows past
    /// side² are never read).</summary>
    [JsonIgnore]
    public int PosEmbedGridSide => (int)Math.Sqrt(PosEmbedMaxSize);

    /// <summary>Checks that the values make a model whose forward can run.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void AtLeast(int v, int min, string name)
        {
            if (v < min) throw new ArgumentException($"AuraFlow transformer config: {name} must be at least {min}, got {v}.");
        }
        AtLeast(SampleSize, 1, "sample_size");
        AtLeast(PatchSize, 1, "patch_size");
        AtLeast(InChannels, 1, "in_channels");
        AtLeast(NumMmditLayers, 0, "num_mmdit_layers");
        AtLeast(NumSingleDitLayers, 0, "num_single_dit_layers");
        AtLeast(AttentionHeadDim, 1, "attention_head_dim");
        AtLeast(NumAttentionHeads, 1, "num_attention_heads");
        AtLeast(JointAttentionDim, 1, "joint_attention_dim");
        AtLeast(ResolvedOutChannels, 1, "out_channels");
        AtLeast(PosEmbedMaxSize, 1, "pos_embed_max_size");
        if (CaptionProjectionDim != InnerDim)
            throw new ArgumentException($"AuraFlow transformer config: caption_projection_dim ({CaptionProjectionDim}) must equal the inner width " +
                $"num_attention_heads × attention_head_dim = {InnerDim}: the projected text is joined to the register tokens and attended at that width.");
    }
}
