using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' DC-AE <c>EfficientViTBlock</c>: a residual <see cref="SanaMultiscaleLinearAttention"/> (<c>attn</c>) then a
/// residual <see cref="GLUMBConv"/> with an RMSNorm (<c>conv_out</c>, expand ratio 4), both keeping the width.
/// </summary>
public sealed class EfficientViTBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly SanaMultiscaleLinearAttention attn;
    private readonly GLUMBConv conv_out;
#pragma warning restore IDE1006

    /// <summary>Creates the block.</summary>
    /// <param name="inChannels">Channels in and out.</param>
    /// <param name="mult">Head-count multiplier of the attention.</param>
    /// <param name="attentionHeadDim">Channels per head.</param>
    /// <param name="qkvMultiscales">The attention's extra kernel sizes (may be empty).</param>
    /// <param name="normType">The attention's <c>norm_out</c>: "rms_norm" or "batch_norm" (diffusers' default).</param>
    /// <param name="device">Device of the weights.</param>
    /// <param name="dtype">Type of the weights.</param>
    public EfficientViTBlock(long inChannels, double mult = 1.0, long attentionHeadDim = 32, long[]? qkvMultiscales = null,
        string normType = "batch_norm", Device? device = null, ScalarType? dtype = null)
        : base(nameof(EfficientViTBlock))
    {
        attn = new SanaMultiscaleLinearAttention(inChannels, inChannels, mult: mult, attentionHeadDim: attentionHeadDim,
            normType: normType, kernelSizes: qkvMultiscales ?? [5], residualConnection: true, device: device, dtype: dtype);
        conv_out = new GLUMBConv(inChannels, inChannels, normType: "rms_norm", device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => attn.forward(x).Consume(conv_out.forward);
}
