using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' DC-AE <c>ResBlock</c>: 3×3 <c>conv1</c> (with bias), the activation, 3×3 <c>conv2</c> (no bias), the
/// <c>norm</c> (see <see cref="DCNormalization"/>), plus the input.
/// </summary>
public sealed class ResBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv1;
    private readonly Conv2d conv2;
    private readonly nn.Module<Tensor, Tensor> norm;
#pragma warning restore IDE1006
    private readonly string? _activation;

    /// <summary>Creates the block.</summary>
    /// <param name="inChannels">Input channels (the residual is added, so the output channels must be the same).</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="normType">"rms_norm" or "batch_norm".</param>
    /// <param name="actFn">A name diffusers' <c>get_activation</c> knows (silu, swish, gelu, relu, mish; any case), or
    /// null for none (diffusers' <c>nn.Identity()</c>).</param>
    /// <param name="device">Device of the weights.</param>
    /// <param name="dtype">Type of the weights.</param>
    public ResBlock(long inChannels, long outChannels, string normType, string? actFn, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ResBlock))
    {
        if (inChannels != outChannels)
            throw new ArgumentException($"ResBlock adds its input to its output: {inChannels} input channels cannot become {outChannels}.", nameof(outChannels));
        _activation = actFn?.ToLowerInvariant();
        conv1 = nn.Conv2d(inChannels, inChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        conv2 = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, bias: false, device: device, dtype: dtype);
        norm = DCNormalization.Create(normType, outChannels, device, dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor hiddenStates)
    {
        var h = conv1.forward(hiddenStates);
        if (_activation is not null) h = h.Consume(x => DiffusersActivations.Apply(_activation, x));
        h = h.Consume(conv2.forward).Consume(x => DCNormalization.Apply(norm, x));
        return h.Consume(x => x + hiddenStates);
    }
}
