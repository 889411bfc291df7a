using DiffusersSharp.Runtime;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Runtime;

public class RuntimeTests
{
    [Fact]
    public void CpuGeneratorReplaysTorchManualSeed()
    {
        // torch.manual_seed(42); torch.randn(5) in PyTorch
        using var g = new Generator("cpu").ManualSeed(42);
        using var x = g.Randn([5], ScalarType.Float32, CPU);
        var expected = new[] { 0.3367f, 0.1288f, 0.2345f, 0.2303f, -1.1229f };
        var actual = x.data<float>().ToArray();
        for (int i = 0; i < 5; i++) Assert.Equal(expected[i], actual[i], 4);
        using var again = new Generator("cpu").ManualSeed(42).Randn([5], ScalarType.Float32, CPU);
        Assert.True(again.equal(x).all().item<bool>());
    }

    [Theory]
    [InlineData("float32", ScalarType.Float32)]
    [InlineData("fp32", ScalarType.Float32)]
    [InlineData("bfloat16", ScalarType.BFloat16)]
    [InlineData("torch.bfloat16", ScalarType.BFloat16)]
    [InlineData("fp16", ScalarType.Float16)]
    public void ParsesDtypes(string name, ScalarType expected) => Assert.Equal(expected, TorchDtypes.Parse(name));

    [Fact]
    public void UnknownDtypeAndDeviceAreClearErrors()
    {
        Assert.Contains("expected float32, bfloat16 or float16", Assert.Throws<ArgumentException>(() => TorchDtypes.Parse("int8")).Message);
        Assert.Contains("expected cpu, cuda or cuda:N", Assert.Throws<ArgumentException>(() => TorchDevices.Parse("tpu")).Message);
        Assert.Equal(TorchSharp.DeviceType.CPU, TorchDevices.Parse("cpu").type);
    }

    [Fact]
    public void CudaWithoutACudaLibtorchSaysWhatToDo()
    {
        if (TorchDevices.IsCudaAvailable()) return; // a CUDA machine: nothing to check here
        var e = Assert.Throws<NotSupportedException>(() => TorchDevices.Parse("cuda"));
        Assert.Contains(TorchDevices.TorchLibEnvironmentVariable, e.Message);
        Assert.Contains("--device cpu", e.Message);
    }
}
