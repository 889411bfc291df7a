using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>Projection of pooled text embeddings (diffusers <c>PixArtAlphaTextProjection</c>, act "silu").</summary>
public sealed class PixArtAlphaTextProjection : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly TorchSharp.Modules.Linear linear_1;
    private readonly TorchSharp.Modules.Linear linear_2;
#pragma warning restore IDE1006

    /// <summary>Creates <c>Linear(inFeatures → hiddenSize) → SiLU → Linear(hiddenSize → outFeatures ?? hiddenSize)</c>.</summary>
    public PixArtAlphaTextProjection(long inFeatures, long hiddenSize, long? outFeatures = null, Device? device = null, ScalarType? dtype = null)
        : base(nameof(PixArtAlphaTextProjection))
    {
        linear_1 = nn.Linear(inFeatures, hiddenSize, hasBias: true, device: device, dtype: dtype);
        linear_2 = nn.Linear(hiddenSize, outFeatures ?? hiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the projection.</summary>
    public override Tensor forward(Tensor caption) => linear_2.forward(nn.functional.silu(linear_1.forward(caption)));
}
