using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>LuminaRMSNormZero</c>: the conditioning embedding goes through SiLU and <c>linear</c>
/// (min(dim, 1024) → 4·dim) and splits into (scale_msa, gate_msa, scale_mlp, gate_mlp); the input is RMS-normalised
/// (<c>norm</c>) and scaled by <c>1 + scale_msa</c>. The other three are returned raw for the block to use.
/// </summary>
public sealed class LuminaRMSNormZero : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
    private readonly RMSNorm norm;
#pragma warning restore IDE1006

    /// <summary>Creates the norm of width <paramref name="embeddingDim"/> (its condition is min(embeddingDim, 1024) wide).</summary>
    public LuminaRMSNormZero(long embeddingDim, double normEps, Device? device = null, ScalarType? dtype = null) : base(nameof(LuminaRMSNormZero))
    {
        linear = new Linear(Math.Min(embeddingDim, 1024), 4 * embeddingDim, hasBias: true, device: device, dtype: dtype);
        norm = new RMSNorm(embeddingDim, normEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Normalises <paramref name="x"/> [B, S, dim] under <paramref name="emb"/> [B, min(dim, 1024)]: returns the scaled
    /// norm and gate_msa, scale_mlp, gate_mlp, each [B, dim].
    /// </summary>
    public (Tensor X, Tensor GateMsa, Tensor ScaleMlp, Tensor GateMlp) forward(Tensor x, Tensor emb)
    {
        using var scope = NewDisposeScope();
        var chunks = linear.forward(nn.functional.silu(emb)).chunk(4, 1);
        var normed = norm.forward(x) * (chunks[0].unsqueeze(1) + 1.0);
        return (normed.MoveToOuterDisposeScope(), chunks[1].MoveToOuterDisposeScope(), chunks[2].MoveToOuterDisposeScope(), chunks[3].MoveToOuterDisposeScope());
    }
}
