using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>Upsample2D</c> (interpolating form): nearest-neighbour x2, or to an explicit output size (the UNet's
/// <c>upsample_size</c> when the latent is not a multiple of its total downsampling), then an optional 3x3 <c>conv</c>.
/// </summary>
public sealed class Upsample2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Conv2d? conv;
#pragma warning restore IDE1006

    /// <summary>Builds the layer.</summary>
    /// <param name="channels">Input channels.</param>
    /// <param name="useConv">Whether a 3x3 conv follows the interpolation.</param>
    /// <param name="outChannels">Output channels of the conv (default <paramref name="channels"/>).</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public Upsample2D(long channels, bool useConv = true, long? outChannels = null, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Upsample2D))
    {
        if (useConv)
            conv = nn.Conv2d(channels, outChannels ?? channels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Upsamples by two.</summary>
    public override Tensor forward(Tensor input) => forward(input, null);

    /// <summary>Upsamples to <paramref name="outputSize"/> (height, width), or by two when it is null.</summary>
    public Tensor forward(Tensor input, long[]? outputSize)
    {
        using var scope = NewDisposeScope();
        var up = outputSize is null
            ? nn.functional.interpolate(input, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest)
            : nn.functional.interpolate(input, size: outputSize, mode: InterpolationMode.Nearest);
        var result = conv is null ? up : conv.forward(up);
        return result.MoveToOuterDisposeScope();
    }
}
