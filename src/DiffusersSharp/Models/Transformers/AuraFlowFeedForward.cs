using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// AuraFlow's SwiGLU feed-forward (diffusers <c>AuraFlowFeedForward</c>): <c>out_projection(SiLU(linear_1(x)) ·
/// linear_2(x))</c>, all three bias-free, with a hidden width of <c>int(2 · hidden_dim / 3)</c> rounded up to a multiple
/// of 256 (<c>hidden_dim</c> 4 · dim in every AuraFlow block: 8192 for AuraFlow's 3072).
/// </summary>
public sealed class AuraFlowFeedForward : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear_1, linear_2, out_projection;
#pragma warning restore IDE1006

    /// <summary>Creates the feed-forward of width <paramref name="dim"/> (<paramref name="hiddenDim"/> null: 4 · dim).</summary>
    public AuraFlowFeedForward(long dim, long? hiddenDim = null, Device? device = null, ScalarType? dtype = null) : base(nameof(AuraFlowFeedForward))
    {
        long hidden = FinalHiddenDim(hiddenDim ?? 4 * dim);
        linear_1 = new Linear(dim, hidden, hasBias: false, device: device, dtype: dtype);
        linear_2 = new Linear(dim, hidden, hasBias: false, device: device, dtype: dtype);
        out_projection = new Linear(hidden, dim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>diffusers' <c>find_multiple(int(2 * hidden_dim / 3), 256)</c>: Python's truncating int of the float quotient,
    /// then the next multiple of 256 (itself when it is one).</summary>
    public static long FinalHiddenDim(long hiddenDim)
    {
        long n = (long)(2.0 * hiddenDim / 3);
        return n % 256 == 0 ? n : n + 256 - n % 256;
    }

    /// <summary>Applies the feed-forward to <paramref name="x"/> [..., dim].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // The gate product lands in the SiLU's fresh output: one hidden-width tensor fewer.
        var gated = nn.functional.silu(linear_1.forward(x)).mul_(linear_2.forward(x));
        return out_projection.forward(gated).MoveToOuterDisposeScope();
    }
}
