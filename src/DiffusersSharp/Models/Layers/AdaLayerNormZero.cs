using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>The modulated stream and the remaining modulation of <see cref="AdaLayerNormZero"/>.</summary>
/// <param name="X">LayerNorm(x) * (1 + scale_msa) + shift_msa.</param>
/// <param name="GateMsa">Gate of the attention output [B, D].</param>
/// <param name="ShiftMlp">Shift before the feed-forward [B, D].</param>
/// <param name="ScaleMlp">Scale before the feed-forward [B, D].</param>
/// <param name="GateMlp">Gate of the feed-forward output [B, D].</param>
public readonly record struct AdaLayerNormZeroOutput(Tensor X, Tensor GateMsa, Tensor ShiftMlp, Tensor ScaleMlp, Tensor GateMlp);

/// <summary>
/// Adaptive LayerNorm-Zero (diffusers <c>AdaLayerNormZero</c>, the SD3 variant without class labels):
/// <c>emb = Linear(SiLU(temb))</c> split into shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, and a
/// LayerNorm (eps 1e-6, no affine) modulated by the first two. AuraFlow builds it with <c>bias=False</c> and
/// <c>norm_type="fp32_layer_norm"</c>: a linear without bias and <see cref="FP32LayerNorm"/> (eps 1e-5, computed in float32).
/// </summary>
public sealed class AdaLayerNormZero : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _dim;
    private readonly bool _fp32LayerNorm;

    /// <summary>
    /// Creates the norm for width <paramref name="dim"/>: <paramref name="bias"/> is diffusers' <c>bias</c> of the linear,
    /// <paramref name="fp32LayerNorm"/> its <c>norm_type="fp32_layer_norm"</c> (AuraFlow) instead of <c>"layer_norm"</c>.
    /// </summary>
    public AdaLayerNormZero(long dim, Device? device = null, ScalarType? dtype = null, bool bias = true, bool fp32LayerNorm = false)
        : base(nameof(AdaLayerNormZero))
    {
        _dim = dim;
        _fp32LayerNorm = fp32LayerNorm;
        linear = new Linear(dim, 6 * dim, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Modulates <paramref name="x"/> [B, N, D] with the conditioning <paramref name="emb"/> [B, D].</summary>
    public AdaLayerNormZeroOutput forward(Tensor x, Tensor emb)
    {
        var c = linear.forward(nn.functional.silu(emb)).chunk(6, 1);
        if (!_fp32LayerNorm) return Modulate(x, _dim, c);
        using var scope = NewDisposeScope();
        // diffusers: norm(x) * (1 + scale_msa) + shift_msa with the FP32LayerNorm's output cast back to x's type first.
        var modulated = FP32LayerNorm.Apply(x, _dim).mul_(1 + c[1].unsqueeze(1)).add_(c[0].unsqueeze(1)).MoveToOuterDisposeScope();
        return new AdaLayerNormZeroOutput(modulated, c[2], c[3], c[4], c[5]);
    }

    /// <summary>
    /// diffusers' <c>ChromaAdaLayerNormZeroPruned</c> (no parameters): the six modulation vectors come from outside, as
    /// <paramref name="emb"/> [B, 6, D] (Chroma's approximator output for one stream of one block), in the order of
    /// <see cref="forward"/>'s linear output.
    /// </summary>
    public static AdaLayerNormZeroOutput Pruned(Tensor x, Tensor emb)
    {
        if (emb.dim() != 3 || emb.shape[1] != 6 || emb.shape[2] != x.shape[^1])
            throw new ArgumentException($"A pruned AdaLayerNormZero takes [B, 6, {x.shape[^1]}] modulation, got [{string.Join(", ", emb.shape)}].", nameof(emb));
        return Modulate(x, x.shape[^1], emb.unbind(1));
    }

    /// <summary>LayerNorm (eps 1e-6, no affine) of <paramref name="x"/> scaled by 1 + c[1] and shifted by c[0]; c[2..5] passed on.</summary>
    private static AdaLayerNormZeroOutput Modulate(Tensor x, long dim, Tensor[] c)
    {
        return new AdaLayerNormZeroOutput(Modulated(x, dim, c[1], c[0]), c[2], c[3], c[4], c[5]);
    }

    /// <summary><c>x + gate * y</c>, a gate [B, D] (GateMsa, GateMlp) over the tokens of <paramref name="y"/> [B, N, D].</summary>
    internal static Tensor GatedResidual(Tensor x, Tensor gate, Tensor y) =>
        // x + gate·y as diffusers sums it (IEEE addition commutes), landing in the product: one full-size tensor, not two.
        (gate.unsqueeze(1) * y).add_(x);

    /// <summary><c>LayerNorm(x) * (1 + scale) + shift</c> (LayerNorm eps 1e-6, no affine; scale and shift [B, D]).</summary>
    internal static Tensor Modulated(Tensor x, long dim, Tensor scale, Tensor shift)
    {
        using var scope = NewDisposeScope();
        // The same products and sums as normed * (1 + scale) + shift, in place on the fresh LayerNorm output.
        return nn.functional.layer_norm(x, [dim], eps: 1e-6).mul_(1 + scale.unsqueeze(1)).add_(shift.unsqueeze(1)).MoveToOuterDisposeScope();
    }
}
