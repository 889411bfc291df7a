using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// FLUX.2's conditioning embedding (diffusers <c>Flux2TimestepGuidanceEmbeddings</c>): sinusoidal features of the
/// timestep (cos first, no frequency shift) through a bias-free <see cref="TimestepEmbedding"/>, plus, for
/// guidance-distilled models (<c>guidance_embeds</c>), the same of the guidance scale through its own embedder.
/// </summary>
public sealed class Flux2TimestepGuidanceEmbeddings : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly TimestepEmbedding? guidance_embedder;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding from <paramref name="inChannels"/> sinusoidal features to <paramref name="embeddingDim"/>.</summary>
    public Flux2TimestepGuidanceEmbeddings(int inChannels = 256, long embeddingDim = 6144, bool bias = false, bool guidanceEmbeds = true,
        Device? device = null, ScalarType? dtype = null) : base(nameof(Flux2TimestepGuidanceEmbeddings))
    {
        time_proj = new Timesteps(inChannels, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(inChannels, embeddingDim, device, dtype, sampleProjBias: bias);
        if (guidanceEmbeds) guidance_embedder = new TimestepEmbedding(inChannels, embeddingDim, device, dtype, sampleProjBias: bias);
        RegisterComponents();
    }

    /// <summary>Whether the guidance scale is embedded.</summary>
    public bool HasGuidanceEmbedder => guidance_embedder is not null;

    /// <summary>
    /// Embeds <paramref name="timestep"/> [B] (the model's ×1000 value) and, with a guidance embedder, adds the embedding of
    /// <paramref name="guidance"/> [B]; the features are cast to each input's dtype first, as diffusers does. As in
    /// diffusers, a null guidance (or a model without the embedder) gives the timestep's embedding alone.
    /// </summary>
    public Tensor forward(Tensor timestep, Tensor? guidance)
    {
        using var scope = NewDisposeScope();
        var emb = timestep_embedder.forward(time_proj.forward(timestep).to(timestep.dtype));
        if (guidance is not null && guidance_embedder is not null)
            emb = emb + guidance_embedder.forward(time_proj.forward(guidance).to(guidance.dtype));
        return emb.MoveToOuterDisposeScope();
    }
}
