using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Root-mean-square normalisation over the last dimension (diffusers <c>RMSNorm</c>): the variance is taken in float32,
/// the normalised values are cast to the weight's type when that is 16-bit, then scaled by the learned weight. Built
/// with <see cref="Torch"/> it is PyTorch's <c>torch.nn.RMSNorm</c> instead (Chroma's approximator): 16-bit inputs are
/// computed in float32 throughout, weight included, and cast back to the input's type; eps defaults to float32's epsilon.
/// Built with <see cref="Gemma"/> it is transformers' <c>Gemma2RMSNorm</c>: the same float32 computation, scaled by
/// <c>1 + weight</c> (its weight starts at zero).
/// </summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private Parameter weight;
    private Parameter? bias;
#pragma warning restore IDE1006
    private readonly double _eps;
    private readonly Semantics _semantics;

    private enum Semantics { Diffusers, Torch, Gemma }

    /// <summary>Creates the norm over the last <paramref name="dim"/> values.</summary>
    public RMSNorm(long dim, double eps = 1e-6, Device? device = null, ScalarType? dtype = null) : this(dim, eps, Semantics.Diffusers, device, dtype) { }

    private RMSNorm(long dim, double eps, Semantics semantics, Device? device, ScalarType? dtype) : base(nameof(RMSNorm))
    {
        _eps = eps;
        _semantics = semantics;
        // Gemma's learned scale is an offset from 1, so its neutral weight is zero.
        var initial = semantics == Semantics.Gemma ? torch.zeros(dim, dtype: dtype, device: device) : torch.ones(dim, dtype: dtype, device: device);
        weight = new Parameter(initial, requires_grad: false);
        RegisterComponents();
    }

    /// <summary>
    /// PyTorch's <c>torch.nn.RMSNorm(dim, eps)</c> (eps null: float32's epsilon, the one libtorch's <c>rms_norm</c> takes
    /// for float32, bfloat16 and float16 inputs): <c>(x32 · rsqrt(mean(x32²) + eps) · weight).to(x.dtype)</c>.
    /// </summary>
    public static RMSNorm Torch(long dim, Device? device = null, ScalarType? dtype = null, double? eps = null) =>
        new(dim, eps ?? 1.0 / (1 << 23), Semantics.Torch, device, dtype); // 2^-23: C++ numeric_limits<float>::epsilon()

    /// <summary>
    /// transformers' <c>Gemma2RMSNorm(dim, eps)</c>: <c>(x32 · rsqrt(mean(x32²) + eps) · (1 + weight32)).to(x.dtype)</c>,
    /// where x32 is the input in float32 whatever its type (the scale is applied before the cast back, unlike Llama's).
    /// </summary>
    public static RMSNorm Gemma(long dim, double eps = 1e-6, Device? device = null, ScalarType? dtype = null) =>
        new(dim, eps, Semantics.Gemma, device, dtype);

    /// <summary>
    /// diffusers' <c>RMSNorm(dim, eps, elementwise_affine=True, bias=True)</c> (the DC-AE's norms): the diffusers norm
    /// above, then a learned <c>bias</c> (a second checkpoint key) added after the weight, in the weight's type.
    /// </summary>
    public static RMSNorm WithBias(long dim, double eps, Device? device = null, ScalarType? dtype = null)
    {
        var norm = new RMSNorm(dim, eps, device, dtype);
        norm.bias = new Parameter(torch.zeros(dim, dtype: dtype, device: device), requires_grad: false);
        norm.register_parameter(nameof(bias), norm.bias);
        return norm;
    }

    /// <summary>Normalises <paramref name="x"/> over its last dimension.</summary>
    public override Tensor forward(Tensor x)
    {
        // The float32 temporaries are twice the input's size in 16-bit models: freed here, not when the caller's scope ends.
        using var scope = NewDisposeScope();
        if (_semantics != Semantics.Diffusers)
        {
            // libtorch's rms_norm in its composite form: the upcast input times rsqrt, times the weight, cast back.
            // Gemma's x.float() also narrows float64, and its scale is 1.0 + weight.float().
            bool gemma = _semantics == Semantics.Gemma;
            var upcast = gemma || x.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? x.to(ScalarType.Float32) : x;
            var r = (upcast.pow(2).mean([-1L], keepdim: true) + _eps).rsqrt();
            var scale = gemma ? weight.to(ScalarType.Float32) + 1.0 : weight;
            return (upcast * r * scale).to(x.dtype).MoveToOuterDisposeScope();
        }
        var variance = x.to(ScalarType.Float32).pow(2).mean([-1L], keepdim: true);
        // x * rsqrt(var) promotes a 16-bit x to float32, as in diffusers; the weight's 16-bit type is restored before scaling.
        var normed = x * (variance + _eps).rsqrt();
        if (weight.dtype is ScalarType.Float16 or ScalarType.BFloat16) normed = normed.to(weight.dtype);
        var scaled = normed * weight;
        if (bias is not null) scaled.add_(bias);
        return scaled.MoveToOuterDisposeScope();
    }
}
