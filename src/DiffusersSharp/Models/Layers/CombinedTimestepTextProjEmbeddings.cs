using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// The timestep + pooled-text conditioning vector of SD3 and Flux (diffusers <c>CombinedTimestepTextProjEmbeddings</c>):
/// <c>timestep_embedder(Timesteps(256, [cos, sin])(t).to(pooled.dtype)) + text_embedder(pooled)</c>. With
/// <c>withGuidance</c> it is diffusers' <c>CombinedTimestepGuidanceTextProjEmbeddings</c> (guidance-distilled Flux): a
/// <c>guidance_embedder</c> of the same form embeds the guidance scale through the same sinusoidal features, and the
/// result is <c>(t_emb + g_emb) + text_embedder(pooled)</c>, in that order.
/// </summary>
public sealed class CombinedTimestepTextProjEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly TimestepEmbedding? guidance_embedder;
    private readonly PixArtAlphaTextProjection text_embedder;
#pragma warning restore IDE1006

    /// <summary>
    /// Creates the embedding of width <paramref name="embeddingDim"/> from pooled text of width
    /// <paramref name="pooledProjectionDim"/>; <paramref name="withGuidance"/> adds the guidance embedder.
    /// </summary>
    public CombinedTimestepTextProjEmbeddings(long embeddingDim, long pooledProjectionDim, Device? device = null, ScalarType? dtype = null,
        bool withGuidance = false)
        : base(withGuidance ? "CombinedTimestepGuidanceTextProjEmbeddings" : nameof(CombinedTimestepTextProjEmbeddings))
    {
        time_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        if (withGuidance) guidance_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        text_embedder = new PixArtAlphaTextProjection(pooledProjectionDim, embeddingDim, device: device, dtype: dtype, actFn: "silu");
        RegisterComponents();
    }

    /// <summary>Whether this embedding has a guidance embedder (and so needs a guidance input).</summary>
    public bool HasGuidance => guidance_embedder is not null;

    /// <summary>Returns the conditioning [B, D] for <paramref name="timestep"/> [B] and <paramref name="pooledProjection"/> [B, P].</summary>
    /// <exception cref="InvalidOperationException">This embedding has a guidance embedder (use the overload with guidance).</exception>
    public override Tensor forward(Tensor timestep, Tensor pooledProjection)
    {
        if (guidance_embedder is not null) throw new InvalidOperationException("This embedding embeds guidance: pass the guidance scale too.");
        var t = timestep_embedder.forward(time_proj.forward(timestep).to(pooledProjection.dtype));
        return t + text_embedder.forward(pooledProjection);
    }

    /// <summary>
    /// Returns the conditioning [B, D] for <paramref name="timestep"/> [B], <paramref name="guidance"/> [B] (scaled as the
    /// model expects it, Flux: ×1000) and <paramref name="pooledProjection"/> [B, P].
    /// </summary>
    /// <exception cref="InvalidOperationException">This embedding has no guidance embedder.</exception>
    public Tensor forward(Tensor timestep, Tensor guidance, Tensor pooledProjection)
    {
        if (guidance_embedder is null) throw new InvalidOperationException("This embedding has no guidance embedder.");
        var dtype = pooledProjection.dtype;
        var t = timestep_embedder.forward(time_proj.forward(timestep).to(dtype));
        var g = guidance_embedder.forward(time_proj.forward(guidance).to(dtype));
        return t + g + text_embedder.forward(pooledProjection);
    }
}
