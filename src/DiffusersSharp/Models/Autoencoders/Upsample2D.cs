using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>diffusers' <c>Upsample2D</c> with a conv: nearest-neighbour x2, then a 3x3 conv.</summary>
public sealed class Upsample2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Conv2d conv;
#pragma warning restore IDE1006

    /// <summary>Builds the layer.</summary>
    public Upsample2D(long channels, Device? device = null, ScalarType? dtype = null) : base(nameof(Upsample2D))
    {
        conv = nn.Conv2d(channels, channels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var up = nn.functional.interpolate(input, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest);
        return conv.forward(up).MoveToOuterDisposeScope();
    }
}
