using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>Downsample2D</c>: a stride-2 3x3 <c>conv</c> with the given padding on every side, where
/// padding 0 first zero-pads right and bottom by one (the VAE) and padding 1 is the conv's own (the UNet); without a
/// conv, a 2x2 average pool.
/// </summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly Conv2d? conv;
#pragma warning restore IDE1006
    private readonly int _padding;

    /// <summary>Builds the layer.</summary>
    /// <param name="channels">Input channels.</param>
    /// <param name="useConv">Whether to downsample with a conv (else an average pool).</param>
    /// <param name="outChannels">Output channels of the conv (default <paramref name="channels"/>).</param>
    /// <param name="padding">Conv padding; 0 means the asymmetric right/bottom pad described above.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public Downsample2D(long channels, bool useConv = true, long? outChannels = null, int padding = 1, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Downsample2D))
    {
        if (!useConv && outChannels is long o && o != channels)
            throw new ArgumentException($"Downsample2D without a conv keeps the channel count; got {channels} -> {o}.", nameof(outChannels));
        _padding = padding;
        if (useConv)
            conv = nn.Conv2d(channels, outChannels ?? channels, 3, stride: 2, padding: (long)padding, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        if (conv is null) return nn.functional.avg_pool2d(input, 2, 2).MoveToOuterDisposeScope();
        var padded = _padding == 0 ? nn.functional.pad(input, [0, 1, 0, 1], PaddingModes.Constant, 0) : input;
        return conv.forward(padded).MoveToOuterDisposeScope();
    }
}
