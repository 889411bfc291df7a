using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>AdaGroupNorm</c> (without its optional activation, as the K-UNet blocks build it): a GroupNorm without
/// affine parameters whose scale and shift come from the time embedding, <c>[scale, shift] = linear(emb)</c>,
/// <c>x = group_norm(x) · (1 + scale) + shift</c>.
/// </summary>
public sealed class AdaGroupNorm : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _groups;
    private readonly double _eps;

    /// <summary>Creates the norm of <paramref name="outDim"/> channels in <paramref name="groups"/> groups, driven by an embedding of <paramref name="embeddingDim"/>.</summary>
    public AdaGroupNorm(long embeddingDim, long outDim, long groups, double eps = 1e-5, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AdaGroupNorm))
    {
        if (groups <= 0 || outDim % groups != 0)
            throw new ArgumentException($"AdaGroupNorm: {outDim} channels do not split into {groups} groups.", nameof(groups));
        linear = new Linear(embeddingDim, outDim * 2, hasBias: true, device: device, dtype: dtype);
        _groups = groups;
        _eps = eps;
        RegisterComponents();
    }

    /// <summary>Normalizes <paramref name="x"/> [B, C, h, w] with the scale and shift of <paramref name="emb"/> [B, embeddingDim].</summary>
    public override Tensor forward(Tensor x, Tensor emb)
    {
        using var scope = NewDisposeScope();
        var chunks = linear.forward(emb).unsqueeze(-1).unsqueeze(-1).chunk(2, 1);
        var normed = nn.functional.group_norm(x, _groups, eps: _eps);
        return (normed * (1 + chunks[0]) + chunks[1]).MoveToOuterDisposeScope();
    }
}
