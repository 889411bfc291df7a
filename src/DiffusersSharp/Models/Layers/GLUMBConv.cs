using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>GLUMBConv</c> (sana_transformer.py; "gated linear unit mobile inverted bottleneck") with its full
/// signature, on channels-first maps [B, C, H, W]: a 1×1 <c>conv_inverted</c> to twice the hidden width, SiLU, a 3×3
/// depthwise <c>conv_depth</c>, the halves split into value and gate (<c>value · silu(gate)</c>), a bias-free 1×1
/// <c>conv_point</c> to the output width, then with <c>norm_type="rms_norm"</c> an RMSNorm with a bias over the channels
/// (eps 1e-5; the DC-AE's EfficientViT blocks), and with <c>residual_connection</c> the input added.
/// </summary>
public sealed class GLUMBConv : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv_inverted;
    private readonly Conv2d conv_depth;
    private readonly Conv2d conv_point;
    private readonly RMSNorm? norm;
#pragma warning restore IDE1006
    private readonly bool _residualConnection;

    /// <summary>
    /// Creates the layer <paramref name="inChannels"/> → <paramref name="outChannels"/> with hidden width
    /// <c>int(expandRatio × inChannels)</c> (truncated, as diffusers' <c>int()</c>).
    /// </summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="expandRatio">Hidden width over input width (diffusers' default 4).</param>
    /// <param name="normType">null (no norm) or "rms_norm"; diffusers ignores any other value, and so does this.</param>
    /// <param name="residualConnection">Whether the input is added to the output (diffusers' default; Sana's transformer
    /// blocks turn it off); the output width must then equal the input's.</param>
    /// <param name="device">Device of the weights.</param>
    /// <param name="dtype">Type of the weights.</param>
    public GLUMBConv(long inChannels, long outChannels, double expandRatio = 4, string? normType = null,
        bool residualConnection = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(GLUMBConv))
    {
        long hidden = (long)(expandRatio * inChannels);
        if (hidden < 1) throw new ArgumentOutOfRangeException(nameof(expandRatio), expandRatio, "GLUMBConv needs at least one hidden channel.");
        if (residualConnection && inChannels != outChannels)
            throw new ArgumentException($"GLUMBConv with a residual connection maps {inChannels} channels to the same number; got {outChannels}.", nameof(outChannels));
        _residualConnection = residualConnection;
        conv_inverted = nn.Conv2d(inChannels, hidden * 2, kernel_size: 1, bias: true, device: device, dtype: dtype);
        conv_depth = nn.Conv2d(hidden * 2, hidden * 2, kernel_size: 3, padding: 1, groups: hidden * 2, bias: true, device: device, dtype: dtype);
        conv_point = nn.Conv2d(hidden, outChannels, kernel_size: 1, bias: false, device: device, dtype: dtype);
        if (normType == "rms_norm") norm = RMSNorm.WithBias(outChannels, 1e-5, device, dtype);
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
        // RMSNorm normalises the last axis: the channels are moved there and back (diffusers' movedim(1, -1)).
        if (norm is not null) output = output.Consume(o => norm.forward(o.movedim([1L], [-1L])).movedim([-1L], [1L]));
        if (_residualConnection) output = output.Consume(o => o + hiddenStates);
        return output.MoveToOuterDisposeScope();
    }
}
