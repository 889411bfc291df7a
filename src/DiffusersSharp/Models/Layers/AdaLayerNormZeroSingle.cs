using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Adaptive LayerNorm-Zero of Flux's single-stream blocks (diffusers <c>AdaLayerNormZeroSingle</c>):
/// <c>emb = Linear(SiLU(temb))</c> split into shift_msa, scale_msa, gate_msa, and a LayerNorm (eps 1e-6, no affine)
/// modulated by the first two. Returns the modulated stream and the gate.
/// </summary>
public sealed class AdaLayerNormZeroSingle : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Creates the norm for width <paramref name="dim"/>.</summary>
    public AdaLayerNormZeroSingle(long dim, Device? device = null, ScalarType? dtype = null) : base(nameof(AdaLayerNormZeroSingle))
    {
        _dim = dim;
        linear = new Linear(dim, 3 * dim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Modulates <paramref name="x"/> [B, N, D] with the conditioning <paramref name="emb"/> [B, D]; returns it and gate_msa [B, D].</summary>
    public (Tensor X, Tensor Gate) forward(Tensor x, Tensor emb) =>
        Modulate(x, _dim, linear.forward(nn.functional.silu(emb)).chunk(3, 1));

    /// <summary>
    /// diffusers' <c>ChromaAdaLayerNormZeroSinglePruned</c> (no parameters): shift, scale and gate come from outside, as
    /// <paramref name="emb"/> [B, 3, D] (Chroma's approximator output for one single-stream block).
    /// </summary>
    public static (Tensor X, Tensor Gate) Pruned(Tensor x, Tensor emb)
    {
        if (emb.dim() != 3 || emb.shape[1] != 3 || emb.shape[2] != x.shape[^1])
            throw new ArgumentException($"A pruned AdaLayerNormZeroSingle takes [B, 3, {x.shape[^1]}] modulation, got [{string.Join(", ", emb.shape)}].", nameof(emb));
        return Modulate(x, x.shape[^1], emb.unbind(1));
    }

    private static (Tensor X, Tensor Gate) Modulate(Tensor x, long dim, Tensor[] c) =>
        (nn.functional.layer_norm(x, [dim], eps: 1e-6) * (1 + c[1].unsqueeze(1)) + c[0].unsqueeze(1), c[2]);
}
