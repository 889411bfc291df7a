using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>KUpsample2D</c>: each channel padded by 1 (reflect) and transposed-convolved with the 4 x 4 outer product of
/// [1, 3, 3, 1] / 4 at stride 2, padding 3 (2h x 2w out). diffusers' [C, C, 4, 4] diagonal weight is the same as a depthwise
/// transposed convolution. No parameters.
/// </summary>
public sealed class KUpsample2D : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the layer.</summary>
    public KUpsample2D() : base(nameof(KUpsample2D)) => RegisterComponents();

    /// <summary>Doubles <paramref name="inputs"/> [B, C, h, w].</summary>
    public override Tensor forward(Tensor inputs)
    {
        using var scope = NewDisposeScope();
        long channels = inputs.shape[1];
        var padded = nn.functional.pad(inputs, [1, 1, 1, 1], PaddingModes.Reflect);
        var weight = KDownsample2D.Kernel(2, inputs.dtype, inputs.device).expand(channels, 1, 4, 4);
        return nn.functional.conv_transpose2d(padded, weight, strides: [2, 2], padding: [3, 3], groups: channels).MoveToOuterDisposeScope();
    }
}
