using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The feed-forward of FLUX.2's double-stream blocks (diffusers <c>Flux2FeedForward</c>): <c>linear_in</c> to twice the
/// hidden width (gate and value fused), <see cref="Flux2SwiGLU"/>, <c>linear_out</c>. The hidden width is
/// <c>int(dim × mult)</c> unless given.
/// </summary>
public sealed class Flux2FeedForward : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear_in;
    private readonly Flux2SwiGLU act_fn;
    private readonly Linear linear_out;
#pragma warning restore IDE1006

    /// <summary>Creates the feed-forward <paramref name="dim"/> → <paramref name="dimOut"/> (null: dim).</summary>
    public Flux2FeedForward(long dim, long? dimOut = null, double mult = 3.0, long? innerDim = null, bool bias = false,
        Device? device = null, ScalarType? dtype = null) : base(nameof(Flux2FeedForward))
    {
        long inner = innerDim ?? (long)(dim * mult);
        linear_in = new Linear(dim, inner * 2, hasBias: bias, device: device, dtype: dtype);
        act_fn = new Flux2SwiGLU();
        linear_out = new Linear(inner, dimOut ?? dim, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the feed-forward to <paramref name="x"/> [..., dim].</summary>
    public override Tensor forward(Tensor x)
    {
        // The 2 × hidden-wide projection (6 × dim in FLUX.2) is freed here, not when the block's scope ends.
        using var scope = NewDisposeScope();
        return linear_out.forward(act_fn.forward(linear_in.forward(x))).MoveToOuterDisposeScope();
    }
}
