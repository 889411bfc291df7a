using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Sana's convolutional feed-forward (diffusers <c>GLUMBConv</c>, "gated linear unit mobile inverted bottleneck"), on
/// channels-first maps [B, C, H, W]: a 1×1 <c>conv_inverted</c> to twice the hidden width, SiLU, a 3×3 depthwise
/// <c>conv_depth</c>, the halves split into value and gate (<c>value · silu(gate)</c>), and a bias-free 1×1
/// <c>conv_point</c> back to the output width, optionally added to the input. diffusers' <c>norm_type="rms_norm"</c>
/// (DC-AE's blocks, an RMSNorm with a bias after conv_point) is not built here: Sana's transformer uses none.
/// </summary>
public sealed class GLUMBConv : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv_inverted;
    private readonly Conv2d conv_depth;
    private readonly Conv2d conv_point;
#pragma warning restore IDE1006
    private readonly bool _residualConnection;

    /// <summary>
    /// Creates the layer <paramref name="inChannels"/> → <paramref name="outChannels"/> with hidden width
    /// <c>int(expandRatio × inChannels)</c> (truncated, as diffusers' <c>int()</c>); <paramref name="residualConnection"/>
    /// adds the input to the output (diffusers' default; Sana's blocks turn it off).
    /// </summary>
    public GLUMBConv(long inChannels, long outChannels, double expandRatio = 4, bool residualConnection = true,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(GLUMBConv))
    {
        long hidden = (long)(expandRatio * inChannels);
        if (hidden < 1) throw new ArgumentOutOfRangeException(nameof(expandRatio), expandRatio, "GLUMBConv needs at least one hidden channel.");
        _residualConnection = residualConnection;
        conv_inverted = nn.Conv2d(inChannels, hidden * 2, kernel_size: 1, bias: true, device: device, dtype: dtype);
        conv_depth = nn.Conv2d(hidden * 2, hidden * 2, kernel_size: 3, padding: 1, groups: hidden * 2, bias: true, device: device, dtype: dtype);
        conv_point = nn.Conv2d(hidden, outChannels, kernel_size: 1, bias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the layer to <paramref name="hiddenStates"/> [B, in, H, W], giving [B, out, H, W].</summary>
    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var h = conv_inverted.forward(hiddenStates)
            .Consume(x => nn.functional.silu(x, inplace: true))
            .Consume(conv_depth.forward);
        var halves = h.chunk(2, 1);
        var gated = halves[0] * nn.functional.silu(halves[1]);
        h.Dispose();
        var output = gated.Consume(conv_point.forward);
        if (_residualConnection) output = output.Consume(o => o + hiddenStates);
        return output.MoveToOuterDisposeScope();
    }
}
