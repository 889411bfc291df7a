using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>CrossAttnDownBlock2D</c>: (resnet, <see cref="Transformer2DModel"/>) pairs, then an optional conv
/// <see cref="Downsample2D"/>. Each transformer has <c>heads</c> heads of <c>out_channels / heads</c>.
/// </summary>
public sealed class CrossAttnDownBlock2D : nn.Module, IUNetDownBlock
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<Downsample2D>? downsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public CrossAttnDownBlock2D(long inChannels, long outChannels, long tembChannels, int numLayers, int transformerLayers,
        long groups, double eps, int heads, long crossAttentionDim, bool addDownsample, int downsamplePadding,
        bool useLinearProjection, bool onlyCrossAttention, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CrossAttnDownBlock2D))
    {
        resnets = new ModuleList<ResnetBlock2D>();
        attentions = new ModuleList<Transformer2DModel>();
        for (int i = 0; i < numLayers; i++)
        {
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, groups, eps, tembChannels, device: device, dtype: dtype));
            attentions.Add(new Transformer2DModel(heads, outChannels / heads, outChannels, transformerLayers, groups, crossAttentionDim,
                useLinearProjection, onlyCrossAttention, device, dtype));
        }
        if (addDownsample)
            downsamplers = new ModuleList<Downsample2D>(
                new Downsample2D(outChannels, useConv: true, outChannels: outChannels, padding: downsamplePadding, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <inheritdoc cref="DownBlock2D.forward"/>
    public (Tensor Hidden, Tensor[] Residuals) forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates) =>
        forward(hiddenStates, temb, encoderHiddenStates, null);

    /// <summary>
    /// Runs the block; <paramref name="additionalResiduals"/> (a T2I-Adapter feature map, diffusers'
    /// <c>additional_residuals</c>) is added to the output of the last (resnet, transformer) pair, before it is kept as a
    /// skip state and before the downsampler.
    /// </summary>
    public (Tensor Hidden, Tensor[] Residuals) forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates, Tensor? additionalResiduals)
    {
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor>();
        var h = hiddenStates;
        for (int i = 0; i < resnets.Count; i++)
        {
            // The resnet's output is freed once attended (the skip states are the attention outputs).
            h = resnets[i].forward(h, temb).Consume(x => attentions[i].forward(x, encoderHiddenStates));
            if (i == resnets.Count - 1 && additionalResiduals is not null) h = h.Consume(x => x + additionalResiduals);
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
