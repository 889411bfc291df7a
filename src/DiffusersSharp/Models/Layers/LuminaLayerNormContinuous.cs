using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>LuminaLayerNormContinuous</c> with its <c>layer_norm</c> norm (the one Lumina2 builds): the conditioning
/// embedding through SiLU (cast to the input's type) and <c>linear_1</c> gives a scale; the LayerNormed input is
/// multiplied by <c>1 + scale</c> (no shift, unlike <see cref="AdaLayerNormContinuous"/>) and, with an <c>out_dim</c>,
/// projected by <c>linear_2</c>.
/// </summary>
public sealed class LuminaLayerNormContinuous : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear_1;
    private readonly LayerNorm norm;
    private readonly Linear? linear_2;
#pragma warning restore IDE1006

    /// <summary>
    /// Creates the norm of width <paramref name="embeddingDim"/> for a condition <paramref name="conditioningEmbeddingDim"/>
    /// wide; <paramref name="bias"/> is the linears' (and an affine norm's) bias, <paramref name="outDim"/> null leaves out linear_2.
    /// </summary>
    /// <exception cref="NotSupportedException">An affine norm without bias (not a layout diffusers' Lumina models use).</exception>
    public LuminaLayerNormContinuous(long embeddingDim, long conditioningEmbeddingDim, bool elementwiseAffine = true, double eps = 1e-5,
        bool bias = true, long? outDim = null, Device? device = null, ScalarType? dtype = null) : base(nameof(LuminaLayerNormContinuous))
    {
        if (elementwiseAffine && !bias)
            throw new NotSupportedException("LuminaLayerNormContinuous: an affine LayerNorm without bias is not supported.");
        linear_1 = new Linear(conditioningEmbeddingDim, embeddingDim, hasBias: bias, device: device, dtype: dtype);
        norm = nn.LayerNorm(embeddingDim, eps, elementwise_affine: elementwiseAffine, device: device, dtype: dtype);
        if (outDim is { } o) linear_2 = new Linear(embeddingDim, o, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Normalises <paramref name="x"/> [B, S, dim] under <paramref name="conditioningEmbedding"/> [B, cond].</summary>
    public Tensor forward(Tensor x, Tensor conditioningEmbedding)
    {
        using var scope = NewDisposeScope();
        var scale = linear_1.forward(nn.functional.silu(conditioningEmbedding).to(x.dtype));
        var result = norm.forward(x) * (scale + 1.0).unsqueeze(1);
        if (linear_2 is not null) result = linear_2.forward(result);
        return result.MoveToOuterDisposeScope();
    }
}
