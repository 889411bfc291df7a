using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' <c>SanaMultiscaleAttentionProjection</c>: one extra scale of the concatenated q | k | v map, a depthwise
/// <c>proj_in</c> (kernel k, padding k / 2, no bias) then a grouped 1×1 <c>proj_out</c> (3 × heads groups, no bias).
/// </summary>
public sealed class SanaMultiscaleAttentionProjection : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d proj_in;
    private readonly Conv2d proj_out;
#pragma warning restore IDE1006

    /// <summary>Creates the projection of a q | k | v map of 3 × <paramref name="inChannels"/> channels.</summary>
    public SanaMultiscaleAttentionProjection(long inChannels, long numAttentionHeads, long kernelSize, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaMultiscaleAttentionProjection))
    {
        long channels = 3 * inChannels;
        proj_in = nn.Conv2d(channels, channels, kernelSize, stride: 1, padding: kernelSize / 2, groups: channels, bias: false, device: device, dtype: dtype);
        proj_out = nn.Conv2d(channels, channels, 1, stride: 1, groups: 3 * numAttentionHeads, bias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor hiddenStates) => proj_in.forward(hiddenStates).Consume(proj_out.forward);
}
