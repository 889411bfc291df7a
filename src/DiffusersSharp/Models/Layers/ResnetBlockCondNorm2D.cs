using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>ResnetBlockCondNorm2D</c> with <c>time_embedding_norm="ada_group"</c> (the K-UNet blocks' resnet):
/// <c>h = conv1(act(norm1(x, temb)))</c>, <c>h = conv2(act(norm2(h, temb)))</c> with <see cref="AdaGroupNorm"/>s, plus the
/// input (through a 1x1 <c>conv_shortcut</c> when the channel count changes). No up / down sampling, output scale 1.
/// </summary>
public sealed class ResnetBlockCondNorm2D : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaGroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly AdaGroupNorm norm2;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;
#pragma warning restore IDE1006
    private readonly string _activation;

    /// <summary>Builds the block: <paramref name="inChannels"/> to <paramref name="outChannels"/> (conv1), then
    /// <paramref name="conv2OutChannels"/> (conv2; default <paramref name="outChannels"/>).</summary>
    public ResnetBlockCondNorm2D(long inChannels, long outChannels, long tembChannels, long groups, long groupsOut, double eps, string activation,
        long? conv2OutChannels = null, bool convShortcutBias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ResnetBlockCondNorm2D))
    {
        long output = conv2OutChannels ?? outChannels;
        norm1 = new AdaGroupNorm(tembChannels, inChannels, groups, eps, device, dtype);
        conv1 = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        norm2 = new AdaGroupNorm(tembChannels, outChannels, groupsOut, eps, device, dtype);
        conv2 = nn.Conv2d(outChannels, output, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (inChannels != output)
            conv_shortcut = nn.Conv2d(inChannels, output, 1, stride: 1, padding: 0L, bias: convShortcutBias, device: device, dtype: dtype);
        _activation = activation;
        RegisterComponents();
    }

    /// <summary>Applies the block to <paramref name="input"/> [B, C, h, w] with the time embedding <paramref name="temb"/> [B, T].</summary>
    public override Tensor forward(Tensor input, Tensor temb)
    {
        using var scope = NewDisposeScope();
        var h = DiffusersActivations.Apply(_activation, norm1.forward(input, temb));
        h = conv1.forward(h);
        h = DiffusersActivations.Apply(_activation, norm2.forward(h, temb));
        h = conv2.forward(h);
        var skip = conv_shortcut?.forward(input) ?? input;
        return (skip + h).MoveToOuterDisposeScope();
    }
}
