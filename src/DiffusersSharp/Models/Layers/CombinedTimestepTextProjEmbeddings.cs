using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// SD3's conditioning vector (diffusers <c>CombinedTimestepTextProjEmbeddings</c>):
/// <c>timestep_embedder(Timesteps(256, [cos, sin])(t).to(pooled.dtype)) + text_embedder(pooled)</c>.
/// </summary>
public sealed class CombinedTimestepTextProjEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly PixArtAlphaTextProjection text_embedder;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding of width <paramref name="embeddingDim"/> from pooled text of width <paramref name="pooledProjectionDim"/>.</summary>
    public CombinedTimestepTextProjEmbeddings(long embeddingDim, long pooledProjectionDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CombinedTimestepTextProjEmbeddings))
    {
        time_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        text_embedder = new PixArtAlphaTextProjection(pooledProjectionDim, embeddingDim, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Returns the conditioning [B, D] for <paramref name="timestep"/> [B] and <paramref name="pooledProjection"/> [B, P].</summary>
    public override Tensor forward(Tensor timestep, Tensor pooledProjection)
    {
        var t = timestep_embedder.forward(time_proj.forward(timestep).to(pooledProjection.dtype));
        return t + text_embedder.forward(pooledProjection);
    }
}
