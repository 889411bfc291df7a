using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>diffusers' <c>UNetMidBlock2D</c> as the VAE builds it: resnet, then (attention, resnet); attention optional.</summary>
public sealed class UNetMidBlock2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<VaeAttention>? attentions;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public UNetMidBlock2D(long channels, long groups, bool addAttention, Device? device = null, ScalarType? dtype = null)
        : base(nameof(UNetMidBlock2D))
    {
        resnets = new ModuleList<ResnetBlock2D>(
            new ResnetBlock2D(channels, channels, groups, device: device, dtype: dtype),
            new ResnetBlock2D(channels, channels, groups, device: device, dtype: dtype));
        if (addAttention)
            attentions = new ModuleList<VaeAttention>(new VaeAttention(channels, groups, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var h = resnets[0].forward(input);
        if (attentions is not null) h = h.Consume(attentions[0].forward);
        return h.Consume(resnets[1].forward);
    }
}
