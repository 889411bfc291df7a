using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>CogView3CombinedTimestepSizeEmbeddings</c> (CogView3-Plus, CogView4): the timestep's sinusoidal features
/// (<c>time_proj</c>, timesteps_dim wide, cos first) through <c>timestep_embedder</c>, plus the SDXL-style
/// size conditions (original size, crop top-left, target size: six values, each <c>condition_proj</c>-ed to condition_dim
/// features) through <c>condition_embedder</c> (Linear → SiLU → Linear); the sum is the conditioning.
/// </summary>
public sealed class CogView3CombinedTimestepSizeEmbeddings : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly Timesteps condition_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly PixArtAlphaTextProjection condition_embedder;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding of width <paramref name="embeddingDim"/>.</summary>
    /// <param name="embeddingDim">Output width (the model's time_embed_dim).</param>
    /// <param name="conditionDim">Sinusoidal features per size value.</param>
    /// <param name="pooledProjectionDim">Width of the six size values' features together (6 × condition_dim).</param>
    /// <param name="timestepsDim">Sinusoidal features of the timestep.</param>
    /// <param name="device">Device of the weights.</param>
    /// <param name="dtype">Dtype of the weights.</param>
    public CogView3CombinedTimestepSizeEmbeddings(long embeddingDim, int conditionDim, long pooledProjectionDim, int timestepsDim,
        Device? device = null, ScalarType? dtype = null) : base(nameof(CogView3CombinedTimestepSizeEmbeddings))
    {
        time_proj = new Timesteps(timestepsDim, flipSinToCos: true, downscaleFreqShift: 0);
        condition_proj = new Timesteps(conditionDim, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(timestepsDim, embeddingDim, device, dtype);
        condition_embedder = new PixArtAlphaTextProjection(pooledProjectionDim, embeddingDim, device: device, dtype: dtype, actFn: "silu");
        RegisterComponents();
    }

    /// <summary>The conditioning [B, embedding_dim] in <paramref name="hiddenDtype"/> from <paramref name="timestep"/> [B] and
    /// the size conditions [B, 2] each (the features are computed in float32 and cast, as diffusers does).</summary>
    public Tensor forward(Tensor timestep, Tensor originalSize, Tensor targetSize, Tensor cropCoords, ScalarType hiddenDtype)
    {
        using var scope = NewDisposeScope();
        long b = originalSize.shape[0];
        var timestepsProj = time_proj.forward(timestep);
        Tensor Sizes(Tensor t) => condition_proj.forward(t.flatten()).view(b, -1);
        var conditions = torch.cat([Sizes(originalSize), Sizes(cropCoords), Sizes(targetSize)], 1);
        var sum = timestep_embedder.forward(timestepsProj.to(hiddenDtype)) + condition_embedder.forward(conditions.to(hiddenDtype));
        return sum.MoveToOuterDisposeScope();
    }
}
