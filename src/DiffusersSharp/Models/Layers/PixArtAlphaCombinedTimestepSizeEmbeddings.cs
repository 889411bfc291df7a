using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// PixArt's conditioning vector (diffusers <c>PixArtAlphaCombinedTimestepSizeEmbeddings</c>):
/// <c>timestep_embedder(Timesteps(256, [cos, sin])(t))</c>, and with <c>use_additional_conditions</c> (PixArt-α at 1024)
/// plus the concatenation of the resolution embedding (height and width, each through the shared sinusoidal features and
/// <c>resolution_embedder</c>, [B, 2·size_emb_dim]) and the aspect-ratio embedding ([B, size_emb_dim]).
/// </summary>
public sealed class PixArtAlphaCombinedTimestepSizeEmbeddings : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly Timesteps? additional_condition_proj;
    private readonly TimestepEmbedding? resolution_embedder;
    private readonly TimestepEmbedding? aspect_ratio_embedder;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding of width <paramref name="embeddingDim"/>; size embeddings have width <paramref name="sizeEmbDim"/>.</summary>
    public PixArtAlphaCombinedTimestepSizeEmbeddings(long embeddingDim, long sizeEmbDim, bool useAdditionalConditions,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(PixArtAlphaCombinedTimestepSizeEmbeddings))
    {
        time_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        if (useAdditionalConditions)
        {
            additional_condition_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0);
            resolution_embedder = new TimestepEmbedding(256, sizeEmbDim, device, dtype);
            aspect_ratio_embedder = new TimestepEmbedding(256, sizeEmbDim, device, dtype);
        }
        RegisterComponents();
    }

    /// <summary>Whether the embedding takes resolution and aspect ratio (diffusers' use_additional_conditions).</summary>
    public bool UsesAdditionalConditions => resolution_embedder is not null;

    /// <summary>
    /// Returns the conditioning [B, D] in <paramref name="dtype"/> for <paramref name="timestep"/> [B]; with additional
    /// conditions <paramref name="resolution"/> [B, 2] (height, width in pixels) and <paramref name="aspectRatio"/> [B, 1]
    /// (height / width) are required, otherwise ignored.
    /// </summary>
    /// <exception cref="ArgumentException">The additional conditions are needed and missing, or have the wrong size.</exception>
    public Tensor forward(Tensor timestep, Tensor? resolution, Tensor? aspectRatio, long batchSize, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var emb = timestep_embedder.forward(time_proj.forward(timestep).to(dtype));
        if (resolution_embedder is not null)
        {
            if (resolution is null || aspectRatio is null)
                throw new ArgumentException("this model uses additional conditions: resolution and aspect_ratio are required.");
            if (resolution.numel() != batchSize * 2 || aspectRatio.numel() != batchSize)
                throw new ArgumentException($"resolution must be [{batchSize}, 2] and aspect_ratio [{batchSize}, 1], got " +
                    $"[{string.Join(", ", resolution.shape)}] and [{string.Join(", ", aspectRatio.shape)}].");
            var res = resolution_embedder.forward(additional_condition_proj!.forward(resolution.flatten()).to(dtype)).reshape(batchSize, -1);
            var ar = aspect_ratio_embedder!.forward(additional_condition_proj.forward(aspectRatio.flatten()).to(dtype)).reshape(batchSize, -1);
            emb = emb + torch.cat([res, ar], 1);
        }
        return emb.MoveToOuterDisposeScope();
    }
}
