using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>diffusers' <c>QwenImageMidBlock</c>: a residual block, then (attention, residual block) once.</summary>
public sealed class QwenImageMidBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<QwenImageAttentionBlock> attentions;
    private readonly ModuleList<QwenImageResidualBlock> resnets;
#pragma warning restore IDE1006

    /// <summary>Creates the block for <paramref name="dim"/> channels.</summary>
    public QwenImageMidBlock(long dim, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageMidBlock))
    {
        attentions = new ModuleList<QwenImageAttentionBlock>(new QwenImageAttentionBlock(dim, device, dtype));
        resnets = new ModuleList<QwenImageResidualBlock>(new QwenImageResidualBlock(dim, dim, device, dtype), new QwenImageResidualBlock(dim, dim, device, dtype));
        RegisterComponents();
    }

    /// <summary>Runs the block on <paramref name="x"/> [B, C, T, H, W] with the frame cache.</summary>
    internal Tensor forward(Tensor x, QwenImageFeatureCache cache)
    {
        var y = resnets[0].forward(x, cache);
        for (int i = 0; i < attentions.Count; i++)
            y = y.Consume(attentions[i].forward).Consume(t => resnets[i + 1].forward(t, cache));
        return y;
    }
}
