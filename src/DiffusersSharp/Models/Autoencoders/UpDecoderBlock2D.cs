using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>diffusers' <c>UpDecoderBlock2D</c>: <c>layers</c> resnets, then an optional <see cref="Upsample2D"/>.</summary>
public sealed class UpDecoderBlock2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Upsample2D>? upsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public UpDecoderBlock2D(long inChannels, long outChannels, int layers, long groups, bool addUpsample, Device? device = null, ScalarType? dtype = null)
        : base(nameof(UpDecoderBlock2D))
    {
        resnets = new ModuleList<ResnetBlock2D>();
        for (int i = 0; i < layers; i++)
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, groups, device: device, dtype: dtype));
        if (addUpsample)
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(outChannels, useConv: true, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var h = input;
        foreach (var resnet in resnets) h = h.Consume(resnet.forward, borrowed: input);
        if (upsamplers is not null) h = h.Consume(upsamplers[0].forward, borrowed: input);
        return h;
    }
}
