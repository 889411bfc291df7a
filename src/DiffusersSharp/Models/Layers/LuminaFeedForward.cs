using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>LuminaFeedForward</c>: the bias-free SwiGLU <c>linear_2(silu(linear_1 x) · linear_3 x)</c>, its SiLU
/// computed in float32 and cast back (diffusers' <c>FP32SiLU</c>). The hidden width starts at <c>inner_dim</c>, is
/// multiplied by <c>ffn_dim_multiplier</c> when given (truncated to an integer, as Python's <c>int()</c>), then rounded
/// up to a multiple of <c>multiple_of</c>.
/// </summary>
public sealed class LuminaFeedForward : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear_1, linear_2, linear_3;
#pragma warning restore IDE1006

    /// <summary>Creates the layer of width <paramref name="dim"/>; its hidden width is <see cref="HiddenDim"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="multipleOf"/> is not positive, or the multiplier is not a positive number.</exception>
    public LuminaFeedForward(long dim, long innerDim, int multipleOf = 256, double? ffnDimMultiplier = null, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LuminaFeedForward))
    {
        long hidden = HiddenDim(innerDim, multipleOf, ffnDimMultiplier);
        linear_1 = new Linear(dim, hidden, hasBias: false, device: device, dtype: dtype);
        linear_2 = new Linear(hidden, dim, hasBias: false, device: device, dtype: dtype);
        linear_3 = new Linear(dim, hidden, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>diffusers' sizing: <c>multiple_of · ceil(int(ffn_dim_multiplier · inner_dim) / multiple_of)</c> (no multiplier: inner_dim itself).</summary>
    /// <exception cref="ArgumentException"><paramref name="multipleOf"/> is not positive, or the multiplier is not a positive number.</exception>
    public static long HiddenDim(long innerDim, int multipleOf, double? ffnDimMultiplier)
    {
        if (multipleOf < 1) throw new ArgumentException($"multiple_of must be positive, got {multipleOf}.", nameof(multipleOf));
        if (ffnDimMultiplier is { } m)
        {
            if (!(m > 0) || !double.IsFinite(m)) throw new ArgumentException($"ffn_dim_multiplier must be a positive number, got {m}.", nameof(ffnDimMultiplier));
            innerDim = (long)Math.Truncate(m * innerDim);
        }
        return multipleOf * ((innerDim + multipleOf - 1) / multipleOf);
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gate = linear_1.forward(x);
        var activated = nn.functional.silu(gate.to(ScalarType.Float32)).to(gate.dtype);
        return linear_2.forward(activated * linear_3.forward(x)).MoveToOuterDisposeScope();
    }
}
