using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Sana Sprint's conditioning (diffusers <c>SanaCombinedTimestepGuidanceEmbeddings</c>), in place of
/// <see cref="AdaLayerNormSingle"/>: the timestep and the (pre-scaled) guidance scale each through 256 sinusoidal
/// features ([cos, sin]) and their own two-layer MLP, summed; <c>linear(silu(·))</c> gives the [B, 6·D] modulation.
/// </summary>
public sealed class SanaCombinedTimestepGuidanceEmbeddings : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly Timesteps guidance_condition_proj;
    private readonly TimestepEmbedding guidance_embedder;
    private readonly Linear linear;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding of width <paramref name="embeddingDim"/>.</summary>
    public SanaCombinedTimestepGuidanceEmbeddings(long embeddingDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaCombinedTimestepGuidanceEmbeddings))
    {
        time_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        guidance_condition_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0);
        guidance_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        linear = new Linear(embeddingDim, 6 * embeddingDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Returns (modulation [B, 6·D], conditioning [B, D]) for <paramref name="timestep"/> [B] and
    /// <paramref name="guidance"/> [B], the sinusoidal features cast to <paramref name="dtype"/> before the MLPs.
    /// </summary>
    public (Tensor Modulation, Tensor Conditioning) forward(Tensor timestep, Tensor guidance, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var timestepEmb = timestep_embedder.forward(time_proj.forward(timestep).to(dtype));
        var guidanceEmb = guidance_embedder.forward(guidance_condition_proj.forward(guidance).to(dtype));
        var conditioning = timestepEmb + guidanceEmb;
        var modulation = linear.forward(nn.functional.silu(conditioning));
        return (modulation.MoveToOuterDisposeScope(), conditioning.MoveToOuterDisposeScope());
    }
}
