using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>diffusers' <c>DownBlock2D</c>: <c>resnets</c> with the time embedding, then an optional conv <see cref="Downsample2D"/>.</summary>
public sealed class DownBlock2D : nn.Module, IUNetDownBlock
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public DownBlock2D(long inChannels, long outChannels, long tembChannels, int numLayers, long groups, double eps,
        bool addDownsample, int downsamplePadding, Device? device = null, ScalarType? dtype = null)
        : base(nameof(DownBlock2D))
    {
        resnets = new ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, groups, eps, tembChannels, device: device, dtype: dtype));
        if (addDownsample)
            downsamplers = new ModuleList<Downsample2D>(
                new Downsample2D(outChannels, useConv: true, outChannels: outChannels, padding: downsamplePadding, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>Runs the block; returns the output and every intermediate state the up path concatenates (each resnet's, then the downsampled one).</summary>
    public (Tensor Hidden, Tensor[] Residuals) forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor>();
        var h = hiddenStates;
        foreach (var resnet in resnets)
        {
            h = resnet.forward(h, temb);
            outputs.Add(h);
        }
        if (downsamplers is not null)
        {
            h = downsamplers[0].forward(h);
            outputs.Add(h);
        }
        // The skip states outlive the block; what the transformers and resnets made in between does not.
        foreach (var state in outputs) state.MoveToOuterDisposeScope();
        return (h, outputs.ToArray());
    }
}
