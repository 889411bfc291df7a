using System.Text.Json.Serialization;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// <c>transformer/config.json</c> of <c>ZImageTransformer2DModel</c>. Property names map to the Python snake_case fields;
/// defaults are the diffusers constructor defaults (Z-Image-Turbo's shape but for <c>axes_lens</c>, which its config sets
/// to [1536, 512, 512]).
/// </summary>
public sealed record ZImageTransformer2DModelConfig
{
    /// <summary>diffusers' <c>ADALN_EMBED_DIM</c>: the timestep embedding is <c>min(dim, 256)</c> wide.</summary>
    public const int AdaLnEmbedDimLimit = 256;

    /// <summary>Spatial patch sizes, one per embedder / final layer pair (keyed <c>"{patch}-{f_patch}"</c>).</summary>
    public int[] AllPatchSize { get; init; } = [2];

    /// <summary>Frame patch sizes, paired with <see cref="AllPatchSize"/> in order.</summary>
    public int[] AllFPatchSize { get; init; } = [1];

    /// <summary>Latent channels (in and out).</summary>
    public int InChannels { get; init; } = 16;

    /// <summary>Model width.</summary>
    public int Dim { get; init; } = 3840;

    /// <summary>Number of main (unified image + caption) blocks.</summary>
    public int NLayers { get; init; } = 30;

    /// <summary>Number of noise-refiner and of context-refiner blocks.</summary>
    public int NRefinerLayers { get; init; } = 2;

    /// <summary>Attention heads; the head width is <c>dim / n_heads</c>.</summary>
    public int NHeads { get; init; } = 30;

    /// <summary>Key/value heads: in the config, unused by diffusers' attention (every head has its own keys and values).</summary>
    public int NKvHeads { get; init; } = 30;

    /// <summary>Epsilon of the blocks' and the caption embedder's RMSNorms.</summary>
    public double NormEps { get; init; } = 1e-5;

    /// <summary>Whether q and k get a per-head RMSNorm (eps 1e-5).</summary>
    public bool QkNorm { get; init; } = true;

    /// <summary>Width of the caption features (Qwen3-4B's hidden size).</summary>
    public int CapFeatDim { get; init; } = 2560;

    /// <summary>RoPE base.</summary>
    public double RopeTheta { get; init; } = 256.0;

    /// <summary>The timestep scale: the model embeds <c>t · t_scale</c>.</summary>
    public double TScale { get; init; } = 1000.0;

    /// <summary>RoPE widths of the three position axes (frame / caption index, row, column); they add up to the head width.</summary>
    public int[] AxesDims { get; init; } = [32, 48, 48];

    /// <summary>Positions each RoPE axis covers (diffusers' table lengths): a position at or past them does not exist.</summary>
    public int[] AxesLens { get; init; } = [1024, 512, 512];

    /// <summary>Head width: <c>dim // n_heads</c>.</summary>
    [JsonIgnore]
    public int HeadDim => Dim / NHeads;

    /// <summary>Width of the timestep embedding and the modulations' input: <c>min(dim, 256)</c>.</summary>
    [JsonIgnore]
    public int AdaLnEmbedDim => Math.Min(Dim, AdaLnEmbedDimLimit);

    /// <summary>Hidden width of the SwiGLU feed-forward: Python's <c>int(dim / 3 * 8)</c>.</summary>
    [JsonIgnore]
    public int FeedForwardDim => (int)(Dim / 3.0 * 8);

    /// <summary>The module-dictionary key of a patch pair (<c>all_x_embedder</c>, <c>all_final_layer</c>).</summary>
    public static string PatchKey(int patchSize, int fPatchSize) => $"{patchSize}-{fPatchSize}";

    /// <summary>Checks that the values make a buildable model (diffusers' asserts, and what its forward needs).</summary>
    /// <exception cref="ArgumentException">A field is out of range, naming it.</exception>
    public void Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"Z-Image transformer config: {name} must be positive, got {v}.");
        }
        if (AllPatchSize is null || AllFPatchSize is null || AllPatchSize.Length == 0 || AllPatchSize.Length != AllFPatchSize.Length)
            throw new ArgumentException($"Z-Image transformer config: all_patch_size and all_f_patch_size must be non-empty lists of one length, got [{string.Join(", ", AllPatchSize ?? [])}] and [{string.Join(", ", AllFPatchSize ?? [])}].");
        if (AllPatchSize.Concat(AllFPatchSize).Any(p => p < 1))
            throw new ArgumentException($"Z-Image transformer config: patch sizes must be positive, got [{string.Join(", ", AllPatchSize)}] and [{string.Join(", ", AllFPatchSize)}].");
        if (AllPatchSize.Zip(AllFPatchSize, PatchKey).Distinct().Count() != AllPatchSize.Length)
            throw new ArgumentException("Z-Image transformer config: a (patch_size, f_patch_size) pair is listed twice.");
        Positive(InChannels, "in_channels");
        Positive(Dim, "dim");
        Positive(NHeads, "n_heads");
        if (NLayers < 0) throw new ArgumentException($"Z-Image transformer config: n_layers must not be negative, got {NLayers}.");
        if (NRefinerLayers < 0) throw new ArgumentException($"Z-Image transformer config: n_refiner_layers must not be negative, got {NRefinerLayers}.");
        Positive(CapFeatDim, "cap_feat_dim");
        if (!(NormEps > 0)) throw new ArgumentException($"Z-Image transformer config: norm_eps must be positive, got {NormEps}.");
        if (!(RopeTheta > 0)) throw new ArgumentException($"Z-Image transformer config: rope_theta must be positive, got {RopeTheta}.");
        if (!double.IsFinite(TScale)) throw new ArgumentException($"Z-Image transformer config: t_scale must be finite, got {TScale}.");
        // The patchified positions have three coordinates (frame or caption index, row, column).
        if (AxesDims is null || AxesLens is null || AxesDims.Length != 3 || AxesLens.Length != 3)
            throw new ArgumentException($"Z-Image transformer config: axes_dims and axes_lens must have three entries each, got [{string.Join(", ", AxesDims ?? [])}] and [{string.Join(", ", AxesLens ?? [])}].");
        if (AxesDims.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Z-Image transformer config: axes_dims must be positive even widths, got [{string.Join(", ", AxesDims)}].");
        if (AxesLens.Any(l => l < 1))
            throw new ArgumentException($"Z-Image transformer config: axes_lens must be positive, got [{string.Join(", ", AxesLens)}].");
        if (AxesDims.Sum() != HeadDim)
            throw new ArgumentException($"Z-Image transformer config: axes_dims [{string.Join(", ", AxesDims)}] must add up to the head width dim // n_heads = {HeadDim}.");
    }
}
