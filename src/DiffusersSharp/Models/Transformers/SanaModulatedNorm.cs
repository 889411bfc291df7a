using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Sana's output norm (diffusers <c>SanaModulatedNorm</c>): a LayerNorm (no parameters in Sana), then shift and scale
/// from the model's <c>scale_shift_table</c> [2, D] plus the embedded timestep: <c>norm(x) · (1 + scale) + shift</c>.
/// </summary>
public sealed class SanaModulatedNorm : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly LayerNorm norm;
#pragma warning restore IDE1006

    /// <summary>Creates the norm over <paramref name="dim"/> channels.</summary>
    public SanaModulatedNorm(long dim, bool elementwiseAffine = false, double eps = 1e-6, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaModulatedNorm))
    {
        norm = nn.LayerNorm(dim, eps, elementwise_affine: elementwiseAffine, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Normalises <paramref name="hiddenStates"/> [B, N, D] and modulates it with <paramref name="temb"/> [B, D] (the
    /// embedded timestep) added to <paramref name="scaleShiftTable"/> [2, D] (row 0: shift, row 1: scale).
    /// </summary>
    public Tensor forward(Tensor hiddenStates, Tensor temb, Tensor scaleShiftTable)
    {
        using var scope = NewDisposeScope();
        var shiftScale = (scaleShiftTable.unsqueeze(0) + temb.unsqueeze(1).to(scaleShiftTable.device)).chunk(2, 1);
        var normed = norm.forward(hiddenStates);
        return (normed * (1 + shiftScale[1]) + shiftScale[0]).MoveToOuterDisposeScope();
    }
}
