using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>QwenImageCausalConv3d</c>: a Conv3d whose time padding is all in front (2 × pad frames, none after), so
/// an output frame sees only its own and earlier frames; the cached frames of the previous chunk, when given, stand in for
/// that much of the front padding. Height and width are zero-padded on both sides as usual.
/// </summary>
public sealed class QwenImageCausalConv3d : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006
    private readonly long[] _stride;
    private readonly long[] _padding;

    /// <summary>Creates the convolution (kernel, stride and padding per time, height, width).</summary>
    public QwenImageCausalConv3d(long inChannels, long outChannels, (long T, long H, long W) kernel, (long T, long H, long W)? stride = null,
        (long T, long H, long W)? padding = null, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageCausalConv3d))
    {
        var s = stride ?? (1, 1, 1);
        var p = padding ?? (0, 0, 0);
        _stride = [s.T, s.H, s.W];
        // F.pad order: width (left, right), height (top, bottom), time (front, back).
        _padding = [p.W, p.W, p.H, p.H, 2 * p.T, 0];
        weight = new Parameter(empty([outChannels, inChannels, kernel.T, kernel.H, kernel.W], dtype: dtype, device: device), requires_grad: false);
        bias = new Parameter(empty([outChannels], dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>A cubic kernel of side <paramref name="kernel"/> with padding <paramref name="padding"/> on every axis.</summary>
    public QwenImageCausalConv3d(long inChannels, long outChannels, long kernel, long padding = 0, Device? device = null, ScalarType? dtype = null)
        : this(inChannels, outChannels, (kernel, kernel, kernel), null, (padding, padding, padding), device, dtype) { }

    /// <summary>Convolves <paramref name="x"/> [B, C, T, H, W]; <paramref name="cache"/> (the previous chunk's last frames)
    /// replaces that many frames of the front time padding.</summary>
    public Tensor forward(Tensor x, Tensor? cache = null)
    {
        using var scope = NewDisposeScope();
        var padding = (long[])_padding.Clone();
        if (cache is not null && _padding[4] > 0)
        {
            x = cat([cache.to(x.device), x], 2);
            padding[4] -= cache.shape[2];
        }
        if (padding.Any(p => p != 0)) x = nn.functional.pad(x, padding);
        return nn.functional.conv3d(x, weight, bias, strides: _stride).MoveToOuterDisposeScope();
    }
}
