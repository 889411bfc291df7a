using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>KCrossAttnUpBlock2D</c>: the last skip state it takes concatenated (when present), <c>numLayers - 1</c>
/// (<see cref="ResnetBlockCondNorm2D"/>, <see cref="KAttentionBlock"/>) pairs, then an optional <see cref="KUpsample2D"/>.
/// As diffusers decides it, the block is the "first" (it self-attends and takes no skip channels) when its in and out
/// channels and the time embedding width are all equal, and a "middle" one (its last resnet's conv2 maps to
/// <c>inChannels</c>) when its in and out channels differ.
/// </summary>
public sealed class KCrossAttnUpBlock2D : nn.Module, IKUNetUpBlock
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<ResnetBlockCondNorm2D> resnets;
    private readonly ModuleList<KAttentionBlock> attentions;
    private readonly ModuleList<KUpsample2D>? upsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block (diffusers' arguments: <paramref name="numLayers"/> is layers_per_block + 1).</summary>
    public KCrossAttnUpBlock2D(long inChannels, long outChannels, long tembChannels, long crossAttentionDim, int numLayers, double eps,
        string activation, long headDim, bool addUpsample, Device? device = null, ScalarType? dtype = null)
        : base(nameof(KCrossAttnUpBlock2D))
    {
        bool first = inChannels == outChannels && outChannels == tembChannels;
        bool middle = inChannels != outChannels;
        long kIn = first ? outChannels : 2 * outChannels, kOut = inChannels;
        int layers = numLayers - 1;
        resnets = new ModuleList<ResnetBlockCondNorm2D>();
        attentions = new ModuleList<KAttentionBlock>();
        for (int i = 0; i < layers; i++)
        {
            bool last = i == layers - 1;
            long input = i == 0 ? kIn : outChannels;
            resnets.Add(new ResnetBlockCondNorm2D(input, outChannels, tembChannels, input / 32, outChannels / 32, eps, activation,
                conv2OutChannels: middle && last ? kOut : null, convShortcutBias: false, device: device, dtype: dtype));
            long dim = last ? kOut : outChannels;
            attentions.Add(new KAttentionBlock(dim, checked((int)(dim / headDim)), headDim, crossAttentionDim, tembChannels, addSelfAttention: first,
                device: device, dtype: dtype));
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
        for (int i = 0; i < resnets.Count; i++)
        {
            h = resnets[i].forward(h, temb);
            h = attentions[i].forward(h, encoderHiddenStates, temb);
        }
        if (upsamplers is not null) h = upsamplers[0].forward(h);
        return h.MoveToOuterDisposeScope();
    }
}
