using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>AdaLayerNormSingle</c> (adaLN-single, PixArt-α section 2.3): one conditioning vector per sample
/// (<see cref="PixArtAlphaCombinedTimestepSizeEmbeddings"/>, key <c>emb</c>), and <c>linear(silu(·))</c> giving the
/// [B, 6·D] modulation every block adds to its own <c>scale_shift_table</c>. No normalisation happens here.
/// </summary>
public sealed class AdaLayerNormSingle : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PixArtAlphaCombinedTimestepSizeEmbeddings emb;
    private readonly Linear linear;
#pragma warning restore IDE1006

    /// <summary>Creates the layer for width <paramref name="embeddingDim"/> (size embeddings of width D / 3).</summary>
    public AdaLayerNormSingle(long embeddingDim, bool useAdditionalConditions, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AdaLayerNormSingle))
    {
        emb = new PixArtAlphaCombinedTimestepSizeEmbeddings(embeddingDim, embeddingDim / 3, useAdditionalConditions, device, dtype);
        linear = new Linear(embeddingDim, 6 * embeddingDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Whether the layer takes resolution and aspect ratio.</summary>
    public bool UsesAdditionalConditions => emb.UsesAdditionalConditions;

    /// <summary>
    /// Returns (modulation [B, 6·D], embedded timestep [B, D]) for <paramref name="timestep"/> [B] and, where the model
    /// uses them, <paramref name="resolution"/> [B, 2] and <paramref name="aspectRatio"/> [B, 1].
    /// </summary>
    public (Tensor Modulation, Tensor EmbeddedTimestep) forward(Tensor timestep, Tensor? resolution, Tensor? aspectRatio, long batchSize, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var embedded = emb.forward(timestep, resolution, aspectRatio, batchSize, dtype);
        var modulation = linear.forward(nn.functional.silu(embedded));
        return (modulation.MoveToOuterDisposeScope(), embedded.MoveToOuterDisposeScope());
    }
}
