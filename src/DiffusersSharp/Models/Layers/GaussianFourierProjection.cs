using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>GaussianFourierProjection</c> as the UNet's <c>"fourier"</c> time embedding builds it (log off, W stored
/// as <c>weight</c>): <c>x_proj = x[:, None] · weight[None, :] · 2π</c>, output <c>[sin, cos]</c>, or <c>[cos, sin]</c>
/// with <c>flipSinToCos</c>. The frequencies are a stored (untrained) parameter, in the model dtype.
/// </summary>
public sealed class GaussianFourierProjection : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter weight;
#pragma warning restore IDE1006
    private readonly bool _flipSinToCos;

    /// <summary>Creates the projection with <paramref name="embeddingSize"/> frequencies (2 x that many features).</summary>
    public GaussianFourierProjection(long embeddingSize, bool flipSinToCos, Device? device = null, ScalarType? dtype = null)
        : base(nameof(GaussianFourierProjection))
    {
        weight = new Parameter(torch.zeros([embeddingSize], dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        _flipSinToCos = flipSinToCos;
        RegisterComponents();
    }

    /// <summary>Embeds the 1-D <paramref name="x"/> [B] as [B, 2 · embeddingSize] in the weight's dtype (x is promoted as torch does).</summary>
    public override Tensor forward(Tensor x)
    {
        if (x.dim() != 1) throw new ArgumentException($"x must be 1-D [B], got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = NewDisposeScope();
        var projected = x.unsqueeze(1) * weight.unsqueeze(0) * (2 * Math.PI);
        var result = _flipSinToCos ? torch.cat([projected.cos(), projected.sin()], -1) : torch.cat([projected.sin(), projected.cos()], -1);
        return result.MoveToOuterDisposeScope();
    }
}
