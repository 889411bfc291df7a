using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// FLUX.2's shared modulation (diffusers <c>Flux2Modulation</c>): <c>Linear(SiLU(temb))</c> to <c>mod_param_sets</c> sets
/// of (shift, scale, gate). Unlike Flux.1, the model computes it once per forward and every block of a kind shares it
/// (the blocks have no modulation weights of their own).
/// </summary>
public sealed class Flux2Modulation : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006

    /// <summary>Creates the modulation of width <paramref name="dim"/> with <paramref name="modParamSets"/> sets.</summary>
    public Flux2Modulation(long dim, int modParamSets = 2, bool bias = false, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Flux2Modulation))
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(modParamSets, 1);
        ModParamSets = modParamSets;
        linear = new Linear(dim, dim * 3 * modParamSets, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Number of (shift, scale, gate) sets.</summary>
    public int ModParamSets { get; }

    /// <summary>The raw modulation [B, 3 · sets · dim] of the conditioning <paramref name="temb"/> [B, dim].</summary>
    public override Tensor forward(Tensor temb)
    {
        using var activated = nn.functional.silu(temb);
        return linear.forward(activated);
    }

    /// <summary>
    /// diffusers' <c>Flux2Modulation.split(mod, sets)</c>: a [B, n] modulation gets a token axis ([B, 1, n]) and is cut
    /// into <paramref name="modParamSets"/> sets of (shift, scale, gate), each [B, 1, dim] (views).
    /// </summary>
    public static (Tensor Shift, Tensor Scale, Tensor Gate)[] Split(Tensor mod, int modParamSets)
    {
        var withTokens = mod.dim() == 2 ? mod.unsqueeze(1) : mod;
        var chunks = withTokens.chunk(3 * modParamSets, -1);
        return Enumerable.Range(0, modParamSets).Select(i => (chunks[3 * i], chunks[3 * i + 1], chunks[3 * i + 2])).ToArray();
    }

    /// <summary>
    /// <c>(1 + scale) · LayerNorm(x) + shift</c> (LayerNorm over the last dimension, no affine, <paramref name="eps"/>),
    /// computed in place on the fresh LayerNorm output: the same products and sums, one full-size tensor.
    /// </summary>
    internal static Tensor Modulate(Tensor x, double eps, Tensor shift, Tensor scale)
    {
        using var scope = NewDisposeScope();
        return nn.functional.layer_norm(x, [x.shape[^1]], eps: eps).mul_(1 + scale).add_(shift).MoveToOuterDisposeScope();
    }

    /// <summary><c>x + gate · y</c>, summed into the product (IEEE addition commutes): one full-size tensor, not two.</summary>
    internal static Tensor GatedResidual(Tensor x, Tensor gate, Tensor y) => (gate * y).add_(x);
}
