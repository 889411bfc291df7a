using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>FP32LayerNorm</c> without affine parameters (<c>elementwise_affine=False</c>, as AuraFlow builds every one):
/// the input is normalised over its last <c>dim</c> features in float32 whatever its type, then cast back to it, so
/// bfloat16 / float16 models normalise at full precision (a float64 input goes through float32 too, as there). No state-dict
/// keys.
/// </summary>
public sealed class FP32LayerNorm : nn.Module<Tensor, Tensor>
{
    private readonly long _dim;
    private readonly double _eps;

    /// <summary>Creates the norm over <paramref name="dim"/> features with epsilon <paramref name="eps"/> (torch's LayerNorm default 1e-5).</summary>
    public FP32LayerNorm(long dim, double eps = 1e-5) : base(nameof(FP32LayerNorm))
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        _dim = dim;
        _eps = eps;
        RegisterComponents();
    }

    /// <summary>Normalises <paramref name="x"/> [..., dim]; the result has <paramref name="x"/>'s dtype.</summary>
    public override Tensor forward(Tensor x) => Apply(x, _dim, _eps);

    /// <summary>The norm as a function: LayerNorm of <paramref name="x"/> in float32 (no weight, no bias), cast back to its dtype.</summary>
    public static Tensor Apply(Tensor x, long dim, double eps = 1e-5)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dtype == ScalarType.Float32) return nn.functional.layer_norm(x, [dim], eps: eps);
        using var single = x.to(ScalarType.Float32);
        using var normed = nn.functional.layer_norm(single, [dim], eps: eps);
        return normed.to(x.dtype);
    }
}
