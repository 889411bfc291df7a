using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>Two-layer MLP on timestep features (diffusers <c>TimestepEmbedding</c>: linear_1 → SiLU → linear_2).</summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly TorchSharp.Modules.Linear linear_1;
    private readonly TorchSharp.Modules.Linear linear_2;
#pragma warning restore IDE1006

    /// <summary>Creates <c>Linear(inChannels → timeEmbedDim) → SiLU → Linear(timeEmbedDim → timeEmbedDim)</c>.</summary>
    public TimestepEmbedding(long inChannels, long timeEmbedDim, Device? device = null, ScalarType? dtype = null) : base(nameof(TimestepEmbedding))
    {
        linear_1 = nn.Linear(inChannels, timeEmbedDim, hasBias: true, device: device, dtype: dtype);
        linear_2 = nn.Linear(timeEmbedDim, timeEmbedDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the MLP.</summary>
    public override Tensor forward(Tensor sample) => linear_2.forward(nn.functional.silu(linear_1.forward(sample)));
}
