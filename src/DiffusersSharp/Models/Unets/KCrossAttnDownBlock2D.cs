using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>KCrossAttnDownBlock2D</c>: (<see cref="ResnetBlockCondNorm2D"/>, <see cref="KAttentionBlock"/>) pairs,
/// then an optional <see cref="KDownsample2D"/>. Each pair's output is a skip state when the block downsamples; without a
/// downsampler (the deepest block, which also self-attends) its skip states are absent.
/// </summary>
public sealed class KCrossAttnDownBlock2D : nn.Module, IKUNetDownBlock
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<ResnetBlockCondNorm2D> resnets;
    private readonly ModuleList<KAttentionBlock> attentions;
    private readonly ModuleList<KDownsample2D>? downsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block; the attentions have <c>outChannels / headDim</c> heads of <paramref name="headDim"/>.</summary>
    public KCrossAttnDownBlock2D(long inChannels, long outChannels, long tembChannels, long crossAttentionDim, int numLayers, double eps,
        string activation, long headDim, bool addDownsample, Device? device = null, ScalarType? dtype = null)
        : base(nameof(KCrossAttnDownBlock2D))
    {
        resnets = new ModuleList<ResnetBlockCondNorm2D>();
        attentions = new ModuleList<KAttentionBlock>();
        for (int i = 0; i < numLayers; i++)
        {
            long input = i == 0 ? inChannels : outChannels;
            resnets.Add(new ResnetBlockCondNorm2D(input, outChannels, tembChannels, input / 32, outChannels / 32, eps, activation,
                convShortcutBias: false, device: device, dtype: dtype));
            attentions.Add(new KAttentionBlock(outChannels, checked((int)(outChannels / headDim)), headDim, crossAttentionDim, tembChannels,
                addSelfAttention: !addDownsample, device: device, dtype: dtype));
        }
        if (addDownsample) downsamplers = new ModuleList<KDownsample2D>(new KDownsample2D());
        RegisterComponents();
    }

    /// <summary>Runs the block; returns the output and one skip state per pair (absent without a downsampler).</summary>
    public (Tensor Hidden, Tensor?[] Residuals) forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor?>();
        var h = hiddenStates;
        for (int i = 0; i < resnets.Count; i++)
        {
            h = resnets[i].forward(h, temb);
            h = attentions[i].forward(h, encoderHiddenStates, temb);
            outputs.Add(downsamplers is null ? null : h);
        }
        foreach (var state in outputs) state?.MoveToOuterDisposeScope();
        h = downsamplers is null ? h.MoveToOuterDisposeScope() : downsamplers[0].forward(h).MoveToOuterDisposeScope();
        return (h, outputs.ToArray());
    }
}
