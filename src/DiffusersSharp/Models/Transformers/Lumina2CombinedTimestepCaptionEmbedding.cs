using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>Lumina2CombinedTimestepCaptionEmbedding</c>: the timestep's 256 sinusoidal features ([cos, sin], no
/// shift, float32, cast to the latents' type) through <c>timestep_embedder</c> (Linear, SiLU, Linear to min(hidden, 1024));
/// the caption features through <c>caption_embedder</c> (RMSNorm, Linear to hidden).
/// </summary>
public sealed class Lumina2CombinedTimestepCaptionEmbedding : nn.Module
{
    private const int FrequencyEmbeddingSize = 256;

#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> caption_embedder;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding for a model of width <paramref name="hiddenSize"/> and captions <paramref name="capFeatDim"/> wide.</summary>
    public Lumina2CombinedTimestepCaptionEmbedding(int hiddenSize, int capFeatDim, double normEps, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Lumina2CombinedTimestepCaptionEmbedding))
    {
        time_proj = new Timesteps(FrequencyEmbeddingSize, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(FrequencyEmbeddingSize, Math.Min(hiddenSize, 1024), device, dtype);
        caption_embedder = new ModuleList<nn.Module<Tensor, Tensor>>(new RMSNorm(capFeatDim, normEps, device, dtype),
            new Linear(capFeatDim, hiddenSize, hasBias: true, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>
    /// Embeds <paramref name="timestep"/> [B] (features cast to <paramref name="dtype"/>, the latents' type) as
    /// [B, min(hidden, 1024)] and <paramref name="encoderHiddenStates"/> [B, L, cap_feat_dim] as [B, L, hidden].
    /// </summary>
    public (Tensor TimeEmbed, Tensor CaptionEmbed) forward(Tensor timestep, Tensor encoderHiddenStates, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var timeEmbed = timestep_embedder.forward(time_proj.forward(timestep).to(dtype));
        // No cast before the RMSNorm: it takes the features' own type and returns the weights' for 16-bit weights (diffusers' RMSNorm).
        var captionEmbed = caption_embedder[1].forward(caption_embedder[0].forward(encoderHiddenStates));
        return (timeEmbed.MoveToOuterDisposeScope(), captionEmbed.MoveToOuterDisposeScope());
    }
}
