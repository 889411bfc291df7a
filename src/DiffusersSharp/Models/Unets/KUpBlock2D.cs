using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>KUpBlock2D</c>: the last skip state it takes concatenated (when present), <c>numLayers - 1</c>
/// <see cref="ResnetBlockCondNorm2D"/>s (the first from twice the block's channels, the last to <c>inChannels</c>), then an
/// optional <see cref="KUpsample2D"/>.
/// </summary>
public sealed class KUpBlock2D : nn.Module, IKUNetUpBlock
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<ResnetBlockCondNorm2D> resnets;
    private readonly ModuleList<KUpsample2D>? upsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block (diffusers' arguments: <paramref name="numLayers"/> is layers_per_block + 1).</summary>
    public KUpBlock2D(long inChannels, long outChannels, long tembChannels, int numLayers, double eps, string activation, bool addUpsample,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(KUpBlock2D))
    {
        resnets = new ModuleList<ResnetBlockCondNorm2D>();
        int layers = numLayers - 1;
        for (int i = 0; i < layers; i++)
        {
            long input = i == 0 ? 2 * outChannels : outChannels;
            resnets.Add(new ResnetBlockCondNorm2D(input, i == layers - 1 ? inChannels : outChannels, tembChannels, input / 32, outChannels / 32, eps,
                activation, convShortcutBias: false, device: device, dtype: dtype));
        }
        if (addUpsample) upsamplers = new ModuleList<KUpsample2D>(new KUpsample2D());
        RegisterComponents();
    }

    /// <inheritdoc/>
    public int NumResnets => resnets.Count;

    /// <inheritdoc/>
    public Tensor forward(Tensor hiddenStates, Tensor? residual, Tensor temb, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        var h = residual is null ? hiddenStates : cat([hiddenStates, residual], 1);
        foreach (var resnet in resnets) h = resnet.forward(h, temb);
        if (upsamplers is not null) h = upsamplers[0].forward(h);
        return h.MoveToOuterDisposeScope();
    }
}
