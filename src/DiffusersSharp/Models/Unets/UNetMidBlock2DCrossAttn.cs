using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>UNetMidBlock2DCrossAttn</c> (one layer): resnet, <see cref="Transformer2DModel"/>, resnet; the resnets
/// divide by <c>mid_block_scale_factor</c>.
/// </summary>
public sealed class UNetMidBlock2DCrossAttn : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public UNetMidBlock2DCrossAttn(long channels, long tembChannels, int transformerLayers, long groups, double eps, int heads,
        long crossAttentionDim, double outputScaleFactor, bool useLinearProjection, Device? device = null, ScalarType? dtype = null)
        : base(nameof(UNetMidBlock2DCrossAttn))
    {
        resnets = new ModuleList<ResnetBlock2D>(
            new ResnetBlock2D(channels, channels, groups, eps, tembChannels, outputScaleFactor, device, dtype),
            new ResnetBlock2D(channels, channels, groups, eps, tembChannels, outputScaleFactor, device, dtype));
        attentions = new ModuleList<Transformer2DModel>(
            new Transformer2DModel(heads, channels / heads, channels, transformerLayers, groups, crossAttentionDim, useLinearProjection,
                device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>Runs the block.</summary>
    public Tensor forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        return resnets[0].forward(hiddenStates, temb)
            .Consume(h => attentions[0].forward(h, encoderHiddenStates))
            .Consume(h => resnets[1].forward(h, temb)).MoveToOuterDisposeScope();
    }
}
