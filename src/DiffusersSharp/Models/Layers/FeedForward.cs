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
        proj = new Linear(dimIn, dimOut, hasBias: bias, device: device, dtype: dtype);
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
/// diffusers' GEGLU activation module (key <c>proj</c>): <c>proj</c> = Linear(dimIn → 2·dimOut), split in two halves
/// along the last axis (<c>chunk(2, -1)</c>) and returned as <c>hidden · gelu(gate)</c> with the exact (erf) GELU.
/// </summary>
public sealed class GEGLU : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear proj;
#pragma warning restore IDE1006

    /// <summary>Creates <c>GEGLU(Linear(dimIn → 2·dimOut))</c>.</summary>
    public GEGLU(long dimIn, long dimOut, bool bias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(GEGLU))
    {
        proj = new Linear(dimIn, dimOut * 2, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Projects and gates.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var halves = proj.forward(x).chunk(2, -1);
        // hidden · gelu(gate), the product written into the fresh gelu output (IEEE multiplication commutes exactly):
        // one half-width tensor fewer at the FeedForward's peak.
        return nn.functional.gelu(halves[1]).mul_(halves[0]).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// diffusers' transformer <c>FeedForward</c>: <c>net.0</c> = the activation module projecting D → inner (inner =
/// mult·D), <c>net.1</c> = Dropout(0), <c>net.2</c> = Linear(inner → dimOut). Activations: <c>"geglu"</c> (diffusers'
/// default; SD / SDXL UNets), <c>"gelu"</c> and <c>"gelu-approximate"</c> (SD3).
/// </summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<nn.Module<Tensor, Tensor>> net;
#pragma warning restore IDE1006

    /// <summary>Creates the block for width <paramref name="dim"/> (output <paramref name="dimOut"/>, default <paramref name="dim"/>).</summary>
    /// <exception cref="NotSupportedException"><paramref name="activationFn"/> is not one of geglu, gelu, gelu-approximate.</exception>
    public FeedForward(long dim, long? dimOut = null, int mult = 4, bool bias = true, string activationFn = "geglu",
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(FeedForward))
    {
        long inner = dim * mult;
        nn.Module<Tensor, Tensor> act = activationFn switch
        {
            "geglu" => new GEGLU(dim, inner, bias, device, dtype),
            "gelu" => new GELU(dim, inner, tanhApproximation: false, bias: bias, device: device, dtype: dtype),
            "gelu-approximate" => new GELU(dim, inner, tanhApproximation: true, bias: bias, device: device, dtype: dtype),
            _ => throw new NotSupportedException(
                $"FeedForward activation_fn '{activationFn}' is not supported; use geglu, gelu or gelu-approximate."),
        };
        net = new ModuleList<nn.Module<Tensor, Tensor>>(act, nn.Dropout(0.0),
            new Linear(inner, dimOut ?? dim, hasBias: bias, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>Applies the block; the zero-probability dropout is skipped.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return net[0].forward(x).Consume(net[2].forward).MoveToOuterDisposeScope();
    }
}
