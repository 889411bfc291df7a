using TorchSharp;
using GELUApprox = TorchSharp.Modules.GELU.Approximate;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>PixArtAlphaTextProjection</c>: <c>Linear → act → Linear</c>. PixArt projects its T5 captions with the
/// default tanh-approximated GELU (<c>act_fn="gelu_tanh"</c>); SD3 / Flux project their pooled CLIP text with SiLU.
/// </summary>
public sealed class PixArtAlphaTextProjection : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear_1;
    private readonly Linear linear_2;
#pragma warning restore IDE1006
    private readonly bool _gelu;

    /// <summary>
    /// Creates <c>Linear(inFeatures → hiddenSize) → act → Linear(hiddenSize → outFeatures ?? hiddenSize)</c>;
    /// <paramref name="actFn"/> is diffusers' <c>act_fn</c>: "gelu_tanh" (its default) or "silu".
    /// </summary>
    /// <exception cref="NotSupportedException"><paramref name="actFn"/> is another activation.</exception>
    public PixArtAlphaTextProjection(long inFeatures, long hiddenSize, long? outFeatures = null, Device? device = null, ScalarType? dtype = null,
        string actFn = "gelu_tanh")
        : base(nameof(PixArtAlphaTextProjection))
    {
        _gelu = actFn switch
        {
            "gelu_tanh" => true,
            "silu" => false,
            _ => throw new NotSupportedException($"PixArtAlphaTextProjection act_fn '{actFn}' is not supported; use gelu_tanh or silu."),
        };
        linear_1 = new Linear(inFeatures, hiddenSize, hasBias: true, device: device, dtype: dtype);
        linear_2 = new Linear(hiddenSize, outFeatures ?? hiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the projection.</summary>
    public override Tensor forward(Tensor caption)
    {
        using var h = linear_1.forward(caption);
        using var a = _gelu ? h.gelu(GELUApprox.tanh) : nn.functional.silu(h);
        return linear_2.forward(a);
    }
}
