using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' <c>DCDownBlock2d</c>: halves the resolution with a 3×3 <c>conv</c>, either strided (stride 2) or, with
/// <c>downsample</c> (diffusers' name for the pixel-unshuffle type), at stride 1 to a quarter of the output channels and
/// then pixel-unshuffled 2×2. The shortcut pixel-unshuffles the input and averages each group of
/// <c>4 · in / out</c> consecutive channels (the DC-AE's space-to-channel residual), added to the conv's output.
/// </summary>
public sealed class DCDownBlock2d : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv;
#pragma warning restore IDE1006
    private const int Factor = 2;
    private readonly bool _downsample;
    private readonly bool _shortcut;
    private readonly long _groupSize;

    /// <summary>Creates the block.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels (a multiple of 4 with <paramref name="downsample"/>; with
    /// <paramref name="shortcut"/> a divisor of 4 × <paramref name="inChannels"/>).</param>
    /// <param name="downsample">Pixel-unshuffle instead of a strided convolution.</param>
    /// <param name="shortcut">Whether the channel-averaged, pixel-unshuffled input is added.</param>
    /// <param name="device">Device of the weights.</param>
    /// <param name="dtype">Type of the weights.</param>
    public DCDownBlock2d(long inChannels, long outChannels, bool downsample = false, bool shortcut = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(DCDownBlock2d))
    {
        const int outRatio = Factor * Factor;
        _downsample = downsample;
        _shortcut = shortcut;
        _groupSize = inChannels * outRatio / outChannels;
        if (shortcut && (_groupSize < 1 || _groupSize * outChannels != inChannels * outRatio))
            throw new ArgumentException($"DCDownBlock2d's shortcut averages 4 x {inChannels} channels in equal groups: {outChannels} output channels do not divide {inChannels * outRatio}.", nameof(outChannels));
        if (downsample)
        {
            if (outChannels % outRatio != 0)
                throw new ArgumentException($"DCDownBlock2d with pixel_unshuffle needs output channels divisible by 4; got {outChannels}.", nameof(outChannels));
            outChannels /= outRatio;
        }
        conv = nn.Conv2d(inChannels, outChannels, 3, stride: downsample ? 1 : 2, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor hiddenStates)
    {
        var x = conv.forward(hiddenStates);
        if (_downsample) x = x.Consume(t => nn.functional.pixel_unshuffle(t, Factor));
        if (!_shortcut) return x;
        using var unshuffled = nn.functional.pixel_unshuffle(hiddenStates, Factor);
        using var grouped = unshuffled.unflatten(1, [-1, _groupSize]);
        using var averaged = grouped.mean([2L]);
        return x.Consume(t => t + averaged);
    }
}
