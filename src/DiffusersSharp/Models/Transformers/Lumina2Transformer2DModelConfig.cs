using System.Text.Json.Serialization;
using DiffusersSharp.Models.Layers;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>Lumina2Transformer2DModel</c>. Property names map to the Python snake_case fields;
/// defaults are the diffusers constructor defaults (Lumina-Image 2.0's shape, but for <c>cap_feat_dim</c>, which its
/// config sets to 2304, Gemma-2-2B's width).
/// </summary>
public sealed record Lumina2Transformer2DModelConfig
{
    /// <summary>The trained latent size (unused by the forward: RoPE positions are computed for any size).</summary>
    public int SampleSize { get; init; } = 128;

    /// <summary>Side of the square patches the latent is cut into.</summary>
    public int PatchSize { get; init; } = 2;

    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 16;

    /// <summary>Latent channels out; null means <see cref="InChannels"/>.</summary>
    public int? OutChannels { get; init; }

    /// <summary>Model width.</summary>
    public int HiddenSize { get; init; } = 2304;

    /// <summary>Number of main (joint caption + image) blocks.</summary>
    public int NumLayers { get; init; } = 26;

    /// <summary>Number of noise-refiner and of context-refiner blocks.</summary>
    public int NumRefinerLayers { get; init; } = 2;

    /// <summary>Query heads; the head width is <c>hidden_size // num_attention_heads</c>.</summary>
    public int NumAttentionHeads { get; init; } = 24;

    /// <summary>Key / value heads (grouped-query attention: each serves num_attention_heads / num_kv_heads query heads).</summary>
    public int NumKvHeads { get; init; } = 8;

    /// <summary>The feed-forward's hidden width is rounded up to a multiple of this.</summary>
    public int MultipleOf { get; init; } = 256;

    /// <summary>Multiplier of the feed-forward's starting hidden width 4 · hidden_size (null: none).</summary>
    public double? FfnDimMultiplier { get; init; }

    /// <summary>Epsilon of the blocks' and the caption embedder's RMSNorms.</summary>
    public double NormEps { get; init; } = 1e-5;

    /// <summary>In the config, unused by the model (the pipelines read the VAE's scaling factor).</summary>
    public double ScalingFactor { get; init; } = 1.0;

    /// <summary>RoPE widths of the three position axes (caption index, row, column); they add up to the head width.</summary>
    public int[] AxesDimRope { get; init; } = [32, 32, 32];

    /// <summary>Positions each RoPE axis covers (diffusers' table lengths): a position at or past them does not exist.</summary>
    public int[] AxesLens { get; init; } = [300, 512, 512];

    /// <summary>Width of the caption features (the text encoder's hidden size).</summary>
    public int CapFeatDim { get; init; } = 1024;

    /// <summary><see cref="OutChannels"/>, or <see cref="InChannels"/> when it is null.</summary>
    [JsonIgnore]
    public int OutChannelsOrIn => OutChannels ?? InChannels;

    /// <summary>Head width: <c>hidden_size // num_attention_heads</c>.</summary>
    [JsonIgnore]
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>Width of the timestep embedding and the modulations' input: <c>min(hidden_size, 1024)</c>.</summary>
    [JsonIgnore]
    public int TimeEmbedDim => Math.Min(HiddenSize, 1024);

    /// <summary>Hidden width of the feed-forward (<see cref="LuminaFeedForward.HiddenDim"/> of 4 · hidden_size).</summary>
    [JsonIgnore]
    public long FeedForwardDim => LuminaFeedForward.HiddenDim(4L * HiddenSize, MultipleOf, FfnDimMultiplier);

    /// <summary>Checks that the values make a buildable model (what diffusers' constructor and forward need).</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"Lumina2 transformer config: {name} must be positive, got {v}.");
        }
        Positive(PatchSize, "patch_size");
        Positive(InChannels, "in_channels");
        if (OutChannels is { } o) Positive(o, "out_channels");
        Positive(HiddenSize, "hidden_size");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKvHeads, "num_kv_heads");
        Positive(MultipleOf, "multiple_of");
        Positive(CapFeatDim, "cap_feat_dim");
        if (NumLayers < 0) throw new ArgumentException($"Lumina2 transformer config: num_layers must not be negative, got {NumLayers}.");
        if (NumRefinerLayers < 0) throw new ArgumentException($"Lumina2 transformer config: num_refiner_layers must not be negative, got {NumRefinerLayers}.");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ArgumentException($"Lumina2 transformer config: hidden_size {HiddenSize} must be divisible by num_attention_heads {NumAttentionHeads}.");
        // diffusers repeats each key / value head num_attention_heads // num_kv_heads times; any other ratio leaves heads unmatched.
        if (NumAttentionHeads % NumKvHeads != 0)
            throw new ArgumentException($"Lumina2 transformer config: num_attention_heads {NumAttentionHeads} must be a multiple of num_kv_heads {NumKvHeads}.");
        if (FfnDimMultiplier is { } m && (!(m > 0) || !double.IsFinite(m)))
            throw new ArgumentException($"Lumina2 transformer config: ffn_dim_multiplier must be a positive number or null, got {m}.");
        if (!(NormEps > 0)) throw new ArgumentException($"Lumina2 transformer config: norm_eps must be positive, got {NormEps}.");
        if (AxesDimRope is null || AxesLens is null || AxesDimRope.Length != 3 || AxesLens.Length != 3)
            throw new ArgumentException($"Lumina2 transformer config: axes_dim_rope and axes_lens must have three entries each, got [{string.Join(", ", AxesDimRope ?? [])}] and [{string.Join(", ", AxesLens ?? [])}].");
        if (AxesDimRope.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Lumina2 transformer config: axes_dim_rope must be positive even widths, got [{string.Join(", ", AxesDimRope)}].");
        if (AxesLens.Any(l => l < 1))
            throw new ArgumentException($"Lumina2 transformer config: axes_lens must be positive, got [{string.Join(", ", AxesLens)}].");
        if (AxesDimRope.Sum() != HeadDim)
            throw new ArgumentException($"Lumina2 transformer config: axes_dim_rope [{string.Join(", ", AxesDimRope)}] must add up to the head width hidden_size // num_attention_heads = {HeadDim}.");
    }
}
