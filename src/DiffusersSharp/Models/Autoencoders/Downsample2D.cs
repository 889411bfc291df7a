using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>diffusers' <c>Downsample2D</c> with <c>padding=0</c>: zero-pad right and bottom by one, then a stride-2 3x3 conv.</summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Conv2d conv;
#pragma warning restore IDE1006

    /// <summary>Builds the layer.</summary>
    public Downsample2D(long channels, Device? device = null, ScalarType? dtype = null) : base(nameof(Downsample2D))
    {
        conv = nn.Conv2d(channels, channels, 3, stride: 2, padding: 0L, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var padded = nn.functional.pad(input, [0, 1, 0, 1], PaddingModes.Constant, 0);
        return conv.forward(padded).MoveToOuterDisposeScope();
    }
}
