using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>KDownsample2D</c>: each channel padded by 1 (reflect) and convolved with the 4 x 4 outer product of
/// [1, 3, 3, 1] / 8 at stride 2. diffusers builds a full [C, C, 4, 4] weight holding the kernel on its diagonal; this is
/// the same convolution as a depthwise one (the off-diagonal terms are zeros). No parameters.
/// </summary>
public sealed class KDownsample2D : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the layer.</summary>
    public KDownsample2D() : base(nameof(KDownsample2D)) => RegisterComponents();

    /// <summary>The 4 x 4 kernel, <c>k1d.T @ k1d</c> with <c>k1d = [1, 3, 3, 1] / 8</c> (times <paramref name="gain"/>).</summary>
    internal static Tensor Kernel(double gain, ScalarType dtype, Device device)
    {
        var k1d = tensor(new float[] { 1 / 8f, 3 / 8f, 3 / 8f, 1 / 8f }, [1, 4]);
        if (gain != 1) k1d = k1d * gain;
        return k1d.t().matmul(k1d).to(dtype, device);
    }

    /// <summary>Halves <paramref name="inputs"/> [B, C, h, w].</summary>
    public override Tensor forward(Tensor inputs)
    {
        using var scope = NewDisposeScope();
        long channels = inputs.shape[1];
        var padded = nn.functional.pad(inputs, [1, 1, 1, 1], PaddingModes.Reflect);
        var weight = Kernel(1, inputs.dtype, inputs.device).expand(channels, 1, 4, 4);
        return nn.functional.conv2d(padded, weight, strides: [2, 2], groups: channels).MoveToOuterDisposeScope();
    }
}
