using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>CogView4AdaLayerNormContinuous</c>, the final norm: <c>LayerNorm(x) · (1 + scale) + shift</c> with
/// (scale, shift) = <c>linear(conditioning)</c>, scale first. Unlike <c>AdaLayerNormContinuous</c> no SiLU is applied to the
/// conditioning here (the model has applied it once already). The norm has no affine parameters, eps 1e-5.
/// </summary>
public sealed class CogView4AdaLayerNormContinuous : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Creates the norm of width <paramref name="embeddingDim"/> conditioned on <paramref name="conditioningEmbeddingDim"/>.</summary>
    public CogView4AdaLayerNormContinuous(long embeddingDim, long conditioningEmbeddingDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CogView4AdaLayerNormContinuous))
    {
        _dim = embeddingDim;
        linear = new Linear(conditioningEmbeddingDim, embeddingDim * 2, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Norms and modulates <paramref name="x"/> [B, N, D] by <paramref name="conditioning"/> [B, E] (cast to x's dtype first).</summary>
    public Tensor forward(Tensor x, Tensor conditioning)
    {
        using var scope = NewDisposeScope();
        var chunks = linear.forward(conditioning.to(x.dtype)).chunk(2, 1);
        var result = nn.functional.layer_norm(x, [_dim], eps: 1e-5) * (1 + chunks[0].unsqueeze(1)) + chunks[1].unsqueeze(1);
        return result.MoveToOuterDisposeScope();
    }
}
