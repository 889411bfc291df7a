using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>ResnetBlock2D</c> as the VAE uses it (no time embedding, dropout 0, output scale 1):
/// <c>shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))</c>, with a 1x1 <c>conv_shortcut</c> when the channel count changes.
/// </summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are the checkpoint keys
    private readonly GroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly GroupNorm norm2;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public ResnetBlock2D(long inChannels, long outChannels, long groups, double eps = 1e-6, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ResnetBlock2D))
    {
        norm1 = VaeGroupNorm.Create(groups, inChannels, eps, device, dtype);
        conv1 = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        norm2 = VaeGroupNorm.Create(groups, outChannels, eps, device, dtype);
        conv2 = nn.Conv2d(outChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (inChannels != outChannels)
            conv_shortcut = nn.Conv2d(inChannels, outChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var h = conv1.forward(nn.functional.silu(norm1.forward(input)));
        h = conv2.forward(nn.functional.silu(norm2.forward(h)));
        var shortcut = conv_shortcut is null ? input : conv_shortcut.forward(input.contiguous());
        return (shortcut + h).MoveToOuterDisposeScope();
    }
}
