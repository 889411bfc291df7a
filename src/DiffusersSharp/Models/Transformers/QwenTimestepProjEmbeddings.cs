using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Qwen-Image's timestep conditioning (diffusers <c>QwenTimestepProjEmbeddings</c>): a 256-channel sinusoidal embedding
/// of the timestep (cos first, frequency shift 0, arguments ×1000, since the pipeline passes σ = t / 1000) cast to the
/// model's dtype, then <c>timestep_embedder</c> (Linear, SiLU, Linear) to the model width. No text or pooled input.
/// </summary>
public sealed class QwenTimestepProjEmbeddings : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding for model width <paramref name="embeddingDim"/>.</summary>
    public QwenTimestepProjEmbeddings(long embeddingDim, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenTimestepProjEmbeddings))
    {
        time_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0, scale: 1000);
        timestep_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        RegisterComponents();
    }

    /// <summary>Embeds <paramref name="timestep"/> [B] (already in the model's dtype, as diffusers casts it) as [B, D].</summary>
    public override Tensor forward(Tensor timestep)
    {
        using var scope = NewDisposeScope();
        var projected = time_proj.forward(timestep).to(timestep.dtype);
        return timestep_embedder.forward(projected).MoveToOuterDisposeScope();
    }
}
