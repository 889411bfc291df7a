using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// <c>torch.nn.Linear</c> (keys <c>weight</c> [out, in] and <c>bias</c> [out]) with PyTorch's own forward,
/// <c>at::linear</c>: a contiguous input of any rank with a bias is flattened to 2-D and goes through one <c>addmm</c>, so
/// the bias is added inside the matrix multiply (cuBLASLt's bias epilogue on CUDA). TorchSharp's <c>Linear</c> calls the
/// C++ frontend's <c>torch::nn::functional::linear</c> instead, which multiplies and then adds the bias as a second
/// kernel for inputs of rank 3 and more: on an H200 that made SD3.5's 1536→6144 projection of 2×4096 tokens take
/// 0.34 ms instead of PyTorch's 0.20 ms, the one primitive of SD3.5's blocks slower than PyTorch's.
/// </summary>
public sealed class Linear : nn.Module<Tensor, Tensor>
{
    // Registered under the checkpoint keys (TorchSharp's RegisterComponents reads ComponentName), set through the properties.
    [ComponentName(Name = nameof(weight))]
    private Parameter _weight;
    [ComponentName(Name = nameof(bias))]
    private Parameter? _bias;

    /// <summary>
    /// Creates the layer <paramref name="inFeatures"/> → <paramref name="outFeatures"/>, initialised as
    /// <c>torch.nn.Linear.reset_parameters</c> does (Kaiming-uniform weight with a = √5, bias uniform in ±1/√in); on the
    /// <c>meta</c> device nothing is drawn.
    /// </summary>
    public Linear(long inFeatures, long outFeatures, bool hasBias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Linear))
    {
        ArgumentOutOfRangeException.ThrowIfNegative(inFeatures);
        ArgumentOutOfRangeException.ThrowIfNegative(outFeatures);
        _weight = new Parameter(empty([outFeatures, inFeatures], dtype: dtype, device: device));
        ConditionallyRegisterParameter(nameof(weight), _weight);
        if (hasBias)
        {
            _bias = new Parameter(empty([outFeatures], dtype: dtype, device: device));
            ConditionallyRegisterParameter(nameof(bias), _bias);
        }
        if (_weight.device_type == DeviceType.META) return;
        using var noGrad = no_grad();
        nn.init.kaiming_uniform_(_weight, a: Math.Sqrt(5));
        double bound = inFeatures > 0 ? 1 / Math.Sqrt(inFeatures) : 0;
        if (_bias is not null) nn.init.uniform_(_bias, -bound, bound);
    }

#pragma warning disable IDE1006 // checkpoint keys, and TorchSharp's Linear names them so too
    /// <summary>The weight [out, in]; setting it replaces (and frees) the old one.</summary>
    public Parameter weight
    {
        get => _weight;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            if (value.Handle == _weight.Handle) return;
            _weight.Dispose();
            _weight = (Parameter)value.DetachFromDisposeScope();
            ConditionallyRegisterParameter(nameof(weight), _weight);
        }
    }

    /// <summary>The bias [out], or null for a layer without one; setting it replaces (and frees) the old one.</summary>
    public Parameter? bias
    {
        get => _bias;
        set
        {
            if (value is not null && value.Handle == _bias?.Handle) return;
            _bias?.Dispose();
            _bias = (Parameter?)value?.DetachFromDisposeScope();
            ConditionallyRegisterParameter(nameof(bias), _bias);
        }
    }

    /// <summary>Input width: the weight's second dimension (TorchSharp's name).</summary>
    public long in_features => _weight.shape[1];

    /// <summary>Output width: the weight's first dimension (TorchSharp's name).</summary>
    public long out_features => _weight.shape[0];
#pragma warning restore IDE1006

    /// <summary><c>x · weightᵀ + bias</c> over the last dimension of <paramref name="x"/>, as <c>at::linear</c> computes it.</summary>
    public override Tensor forward(Tensor x) => Apply(x, _weight, _bias);

    /// <summary>
    /// <c>torch.nn.functional.linear</c> as <c>at::linear</c> computes it: with a bias, a 2-D or contiguous input goes
    /// through one <c>addmm</c> (flattened to 2-D and viewed back); other inputs are multiplied and the bias added after.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(weight);
        if (bias is null || bias.dim() != 1 || weight.dim() != 2 || x.dim() < 2 || (x.dim() > 2 && !x.is_contiguous()))
            return nn.functional.linear(x, weight, bias);
        using var weightT = weight.t();
        if (x.dim() == 2) return addmm(bias, x, weightT, 1, 1);
        var shape = x.shape;
        long rows = 1;
        for (int i = 0; i < shape.Length - 1; i++) rows *= shape[i];
        using var flat = x.view(rows, shape[^1]);
        using var product = addmm(bias, flat, weightT, 1, 1);
        shape[^1] = product.shape[1];
        return product.view(shape);
    }

    /// <summary>Frees the weight and bias.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _weight.Dispose();
            _bias?.Dispose();
        }
        base.Dispose(disposing);
    }
}
