using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Root-mean-square normalisation over the last dimension (diffusers <c>RMSNorm</c>): the variance is taken in float32,
/// the normalised values are cast to the weight's type when that is 16-bit, then scaled by the learned weight.
/// </summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private Parameter weight;
#pragma warning restore IDE1006
    private readonly double _eps;

    /// <summary>Creates the norm over the last <paramref name="dim"/> values.</summary>
    public RMSNorm(long dim, double eps = 1e-6, Device? device = null, ScalarType? dtype = null) : base(nameof(RMSNorm))
    {
        _eps = eps;
        weight = new Parameter(torch.ones(dim, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>Normalises <paramref name="x"/> over its last dimension.</summary>
    public override Tensor forward(Tensor x)
    {
        var variance = x.to(ScalarType.Float32).pow(2).mean([-1L], keepdim: true);
        // x * rsqrt(var) promotes a 16-bit x to float32, as in diffusers; the weight's 16-bit type is restored before scaling.
        var normed = x * (variance + _eps).rsqrt();
        if (weight.dtype is ScalarType.Float16 or ScalarType.BFloat16) normed = normed.to(weight.dtype);
        return normed * weight;
    }
}
