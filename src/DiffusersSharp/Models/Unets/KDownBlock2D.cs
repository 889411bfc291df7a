using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>KDownBlock2D</c>: <see cref="ResnetBlockCondNorm2D"/>s (groups of 32 channels, no shortcut bias), each
/// output a skip state, then an optional <see cref="KDownsample2D"/> (whose output is not one).
/// </summary>
public sealed class KDownBlock2D : nn.Module, IKUNetDownBlock
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<ResnetBlockCondNorm2D> resnets;
    private readonly ModuleList<KDownsample2D>? downsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public KDownBlock2D(long inChannels, long outChannels, long tembChannels, int numLayers, double eps, string activation, bool addDownsample,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(KDownBlock2D))
    {
        resnets = new ModuleList<ResnetBlockCondNorm2D>();
        for (int i = 0; i < numLayers; i++)
        {
            long input = i == 0 ? inChannels : outChannels;
            resnets.Add(new ResnetBlockCondNorm2D(input, outChannels, tembChannels, input / 32, outChannels / 32, eps, activation,
                convShortcutBias: false, device: device, dtype: dtype));
        }
        if (addDownsample) downsamplers = new ModuleList<KDownsample2D>(new KDownsample2D());
        RegisterComponents();
    }

    /// <summary>Runs the block; returns the output and each resnet's output.</summary>
    public (Tensor Hidden, Tensor?[] Residuals) forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor>();
        var h = hiddenStates;
        foreach (var resnet in resnets)
        {
            h = resnet.forward(h, temb);
            outputs.Add(h);
        }
        foreach (var state in outputs) state.MoveToOuterDisposeScope();
        if (downsamplers is not null) h = downsamplers[0].forward(h).MoveToOuterDisposeScope();
        return (h, outputs.ToArray());
    }
}
