using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>CogView4Transformer2DModel</c>. Property names map to the Python snake_case
/// fields; defaults are diffusers' constructor defaults (THUDM/CogView4-6B's file sets 28 layers, 32 heads of 128: always
/// read the file).
/// </summary>
public sealed record CogView4Transformer2DModelConfig
{
    /// <summary>Patch side in latent pixels.</summary>
    public int PatchSize { get; init; } = 2;

    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 16;

    /// <summary>Latent channels out.</summary>
    public int OutChannels { get; init; } = 16;

    /// <summary>Number of transformer blocks.</summary>
    public int NumLayers { get; init; } = 30;

    /// <summary>Width of one attention head (also the rotary table's width).</summary>
    public int AttentionHeadDim { get; init; } = 40;

    /// <summary>Number of attention heads (inner width = heads × head dim).</summary>
    public int NumAttentionHeads { get; init; } = 64;

    /// <summary>Width of the text-encoder states (GLM-4-9B's hidden size, 4096).</summary>
    public int TextEmbedDim { get; init; } = 4096;

    /// <summary>Width of the timestep + size conditioning the blocks are modulated by.</summary>
    public int TimeEmbedDim { get; init; } = 512;

    /// <summary>Sinusoidal features per size condition value (original size, crop, target size: two values each).</summary>
    public int ConditionDim { get; init; } = 256;

    /// <summary>Stored by diffusers; the forward reads no position table (positions are rotary).</summary>
    public int PosEmbedMaxSize { get; init; } = 128;

    /// <summary>The base latent side: the pipeline's default image side is sample_size × the VAE factor.</summary>
    public int SampleSize { get; init; } = 128;

    /// <summary>Rows of the rotary frequency tables along height and width; a grid of any size samples them evenly.</summary>
    public int[] RopeAxesDim { get; init; } = [256, 256];

    /// <summary>Inner width: heads × head dim.</summary>
    [JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Checks that the values make a model whose forward can run.</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void AtLeast(int v, int min, string name)
        {
            if (v < min) throw new ArgumentException($"CogView4 transformer config: {name} must be at least {min}, got {v}.");
        }
        AtLeast(PatchSize, 1, "patch_size");
        AtLeast(InChannels, 1, "in_channels");
        AtLeast(OutChannels, 1, "out_channels");
        AtLeast(NumLayers, 0, "num_layers");
        AtLeast(AttentionHeadDim, 1, "attention_head_dim");
        AtLeast(NumAttentionHeads, 1, "num_attention_heads");
        AtLeast(TextEmbedDim, 1, "text_embed_dim");
        AtLeast(TimeEmbedDim, 1, "time_embed_dim");
        AtLeast(ConditionDim, 2, "condition_dim");
        AtLeast(SampleSize, 1, "sample_size");
        if (ConditionDim % 2 != 0) throw new ArgumentException($"CogView4 transformer config: condition_dim must be even, got {ConditionDim}.");
        // The rotary table: two halves of the head (height, width), each of head_dim / 4 frequencies repeated twice.
        if (AttentionHeadDim % 4 != 0)
            throw new ArgumentException($"CogView4 transformer config: attention_head_dim must be a multiple of 4 (rotary halves for height and width), got {AttentionHeadDim}.");
        if (InnerDim % 2 != 0) throw new ArgumentException($"CogView4 transformer config: the inner width must be even (timestep features), got {InnerDim}.");
        if (RopeAxesDim is not { Length: 2 } || RopeAxesDim[0] < 1 || RopeAxesDim[1] < 1)
            throw new ArgumentException($"CogView4 transformer config: rope_axes_dim must be two positive row counts, got [{string.Join(", ", RopeAxesDim ?? [])}].");
    }
}
