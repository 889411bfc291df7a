using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>diffusers' <c>DownEncoderBlock2D</c>: <c>layers</c> resnets, then an optional <see cref="Downsample2D"/>.</summary>
public sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public DownEncoderBlock2D(long inChannels, long outChannels, int layers, long groups, bool addDownsample, Device? device = null, ScalarType? dtype = null)
        : base(nameof(DownEncoderBlock2D))
    {
        resnets = new ModuleList<ResnetBlock2D>();
        for (int i = 0; i < layers; i++)
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, groups, device: device, dtype: dtype));
        if (addDownsample)
            downsamplers = new ModuleList<Downsample2D>(new Downsample2D(outChannels, useConv: true, padding: 0, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var h = input;
        foreach (var resnet in resnets) h = h.Consume(resnet.forward, borrowed: input);
        if (downsamplers is not null) h = h.Consume(downsamplers[0].forward, borrowed: input);
        return h;
    }
}
