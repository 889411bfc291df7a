using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' <c>DCUpBlock2d</c>: doubles the resolution either by nearest-neighbour interpolation then a 3×3
/// <c>conv</c> (<c>interpolate</c>), or by a 3×3 <c>conv</c> to four times the output channels then a 2×2 pixel shuffle.
/// The shortcut repeats each input channel <c>4 · out / in</c> times (<c>repeat_interleave</c>) and pixel-shuffles
/// the result (the DC-AE's channel-to-space residual), added to the conv's output.
/// </summary>
public sealed class DCUpBlock2d : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv;
#pragma warning restore IDE1006
    private const int Factor = 2;
    private readonly bool _interpolate;
    private readonly bool _shortcut;
    private readonly long _repeats;

    /// <summary>Creates the block.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels (with <paramref name="shortcut"/>, 4 × <paramref name="outChannels"/> must
    /// be a multiple of <paramref name="inChannels"/>).</param>
    /// <param name="interpolate">Nearest-neighbour upsampling before the conv instead of a pixel shuffle after it.</param>
    /// <param name="shortcut">Whether the channel-repeated, pixel-shuffled input is added.</param>
    /// <param name="device">Device of the weights.</param>
    /// <param name="dtype">Type of the weights.</param>
    public DCUpBlock2d(long inChannels, long outChannels, bool interpolate = false, bool shortcut = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(DCUpBlock2d))
    {
        const int outRatio = Factor * Factor;
        _interpolate = interpolate;
        _shortcut = shortcut;
        _repeats = outChannels * outRatio / inChannels;
        if (shortcut && (_repeats < 1 || _repeats * inChannels != outChannels * outRatio))
            throw new ArgumentException($"DCUpBlock2d's shortcut repeats each of {inChannels} channels equally to 4 x {outChannels}: {inChannels} does not divide {outChannels * outRatio}.", nameof(outChannels));
        conv = nn.Conv2d(inChannels, interpolate ? outChannels : outChannels * outRatio, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor hiddenStates)
    {
        Tensor x = _interpolate
            ? nn.functional.interpolate(hiddenStates, scale_factor: [Factor, Factor], mode: InterpolationMode.Nearest).Consume(conv.forward)
            : conv.forward(hiddenStates).Consume(t => nn.functional.pixel_shuffle(t, Factor));
        if (!_shortcut) return x;
        using var repeated = hiddenStates.repeat_interleave(_repeats, dim: 1, output_size: hiddenStates.shape[1] * _repeats);
        using var shuffled = nn.functional.pixel_shuffle(repeated, Factor);
        return x.Consume(t => t + shuffled);
    }
}
