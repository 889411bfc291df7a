using TorchSharp;
using TorchSharp.Modules;
using GELUApprox = TorchSharp.Modules.GELU.Approximate;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>A linear projection followed by GELU (diffusers <c>GELU</c> activation module; key <c>proj</c>).</summary>
public sealed class GELU : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear proj;
#pragma warning restore IDE1006
    private readonly bool _tanh;

    /// <summary>Creates <c>GELU(Linear(dimIn → dimOut))</c>; <paramref name="tanhApproximation"/> selects GELU(approximate="tanh").</summary>
    public GELU(long dimIn, long dimOut, bool tanhApproximation, bool bias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(GELU))
    {
        _tanh = tanhApproximation;
        proj = nn.Linear(dimIn, dimOut, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Projects and activates.</summary>
    public override Tensor forward(Tensor x)
    {
        var h = proj.forward(x);
        return _tanh ? h.gelu_(GELUApprox.tanh) : h.gelu_();
    }
}

/// <summary>
/// The transformer feed-forward (diffusers <c>FeedForward</c> with <c>activation_fn="gelu-approximate"</c>):
/// <c>net.0</c> = Linear(D → mult·D) + tanh GELU, <c>net.1</c> = Dropout(0), <c>net.2</c> = Linear(mult·D → D).
/// </summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<nn.Module<Tensor, Tensor>> net;
#pragma warning restore IDE1006

    /// <summary>Creates the block for width <paramref name="dim"/> (output <paramref name="dimOut"/>, default <paramref name="dim"/>).</summary>
    public FeedForward(long dim, long? dimOut = null, int mult = 4, bool bias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(FeedForward))
    {
        long inner = dim * mult;
        net = new ModuleList<nn.Module<Tensor, Tensor>>(
            new GELU(dim, inner, tanhApproximation: true, bias: bias, device: device, dtype: dtype),
            nn.Dropout(0.0),
            nn.Linear(inner, dimOut ?? dim, hasBias: bias, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>Applies the block; the zero-probability dropout is skipped.</summary>
    public override Tensor forward(Tensor x) => net[2].forward(net[0].forward(x));
}
