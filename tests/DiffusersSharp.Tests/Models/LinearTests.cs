using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// Our <c>torch.nn.Linear</c>: at::linear's arithmetic (one addmm for 2-D and contiguous inputs with a bias), TorchSharp
/// Linear's keys, loading and moving.
/// </summary>
public class LinearTests
{
    private static Tensor Reference(Tensor x, Tensor w, Tensor? b)
    {
        // float64 on the CPU: exact enough to judge float32 results.
        var y = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t());
        return b is null ? y : y + b.to(ScalarType.Float64);
    }

    public static TheoryData<string> Inputs => new() { "2d", "3d", "4d", "3d-narrow", "3d-transposed", "1d" };

    private static Tensor Input(string kind) => kind switch
    {
        "2d" => randn(7, 12),
        "3d" => randn(2, 5, 12),
        "4d" => randn(2, 3, 4, 12),
        "3d-narrow" => randn(2, 9, 12).narrow(1, 2, 5),
        "3d-transposed" => randn(2, 12, 5).transpose(1, 2),
        "1d" => randn(12),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    [Theory]
    [MemberData(nameof(Inputs))]
    public void ForwardIsTheAffineMapForEveryInputLayout(string kind)
    {
        manual_seed(3);
        using var layer = new Linear(12, 6);
        using var layerNoBias = new Linear(12, 6, hasBias: false);
        var x = Input(kind);
        var expectedShape = x.shape[..^1].Append(6L).ToArray();
        foreach (var (l, bias) in new[] { (layer, layer.bias), (layerNoBias, (Tensor?)null) })
        {
            var y = l.forward(x);
            Assert.Equal(expectedShape, y.shape);
            var expected = Reference(x, l.weight, bias);
            double err = (y.to(ScalarType.Float64) - expected).abs().max().item<double>();
            Assert.True(err < 1e-5, $"{kind}: max error {err}");
        }
    }

    [Fact]
    public void ContiguousInputsGoThroughAddmmAsPyTorchDoes()
    {
        // In bfloat16 the two paths round differently: addmm adds the bias before the one rounding of the result,
        // matmul + add rounds the product, adds, and rounds again. So bit equality with the 2-D addmm shows which path
        // ran for a 3-D contiguous input, and the matmul + add result must differ (else this test could not tell).
        manual_seed(5);
        using var layer = new Linear(256, 96, dtype: ScalarType.BFloat16);
        var x = randn(3, 40, 256).to(ScalarType.BFloat16);
        var w = layer.weight.detach();
        var b = layer.bias!.detach();
        var viaAddmm = addmm(b, x.view(-1, 256), w.t(), 1, 1).view(3, 40, 96);
        var viaMatmulAdd = x.matmul(w.t()) + b;
        Assert.False(viaMatmulAdd.eq(viaAddmm).all().item<bool>());
        Assert.True(layer.forward(x).eq(viaAddmm).all().item<bool>());
        Assert.True(Linear.Apply(x, w, b).eq(viaAddmm).all().item<bool>());
        // A non-contiguous input takes at::linear's other path, matmul + add.
        var strided = randn(3, 256, 40).to(ScalarType.BFloat16).transpose(1, 2);
        Assert.True(layer.forward(strided).eq(strided.matmul(w.t()) + b).all().item<bool>());
    }

    [Fact]
    public void KeysAreWeightAndBiasAndLoadingReplacesThem()
    {
        using var layer = new Linear(4, 3, device: new Device(DeviceType.META));
        Assert.Equal(["bias", "weight"], layer.state_dict().Keys.Order(StringComparer.Ordinal));
        StateDictLoader.Replace(layer, "weight", ones(3, 4));
        StateDictLoader.Replace(layer, "bias", full(3, 2f));
        Assert.Equal(DeviceType.CPU, layer.weight.device_type);
        Assert.False(layer.weight.requires_grad);
        var y = layer.forward(ones(2, 4));
        Assert.True(y.eq(full(2, 3, 6f)).all().item<bool>());
        Assert.Equal(4, layer.in_features);
        Assert.Equal(3, layer.out_features);
    }

    [Fact]
    public void MovingToAnotherDtypeMovesWhatForwardUses()
    {
        manual_seed(7);
        using var layer = new Linear(8, 4);
        var before = layer.forward(ones(1, 8)).to(ScalarType.Float64);
        layer.to(ScalarType.Float64);
        Assert.Equal(ScalarType.Float64, layer.weight.dtype);
        Assert.Equal(ScalarType.Float64, layer.state_dict()["weight"].dtype);
        var after = layer.forward(ones(1, 8, dtype: ScalarType.Float64));
        Assert.True((after - before).abs().max().item<double>() < 1e-6);
    }

    [Fact]
    public void BiasCanBeRemoved()
    {
        using var layer = new Linear(4, 3);
        layer.bias = null;
        Assert.Equal(["weight"], layer.state_dict().Keys);
        Assert.Equal([2L, 3L], layer.forward(ones(2, 4)).shape);
    }

    [Fact]
    public void MetaLayersDrawNothingAndRealOnesAreInitialisedAsTorch()
    {
        using var onMeta = new Linear(100, 50, device: new Device(DeviceType.META));
        Assert.Equal(DeviceType.META, onMeta.weight.device_type);
        Assert.Equal(DeviceType.META, onMeta.bias!.device_type);
        manual_seed(11);
        using var layer = new Linear(100, 50);
        double bound = 1 / Math.Sqrt(100);
        // kaiming_uniform_(a=√5) on fan_in 100 is uniform in ±1/√100 too.
        Assert.True(layer.weight.abs().max().item<float>() <= bound + 1e-7);
        Assert.True(layer.weight.std().item<float>() > bound / 3);
        Assert.True(layer.bias!.abs().max().item<float>() <= bound + 1e-7);
    }
}
