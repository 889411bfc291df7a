using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.IO;

public class SafetensorsLoadTests
{
    [Fact]
    public void ReadsFixtureTensorsWithTheirShapesAndValues()
    {
        using var file = SafetensorsFile.Open(Fixtures.Path("tiny-sd3/expected.safetensors"));
        var info = file.Tensors["transformer.hidden_states"];
        Assert.Equal(new long[] { 2, 16, 16, 24 }, info.Shape);
        using var t = file.Read("transformer.hidden_states");
        Assert.Equal(ScalarType.Float32, t.dtype);
        Assert.Equal(info.Shape, t.shape);
        using var timestep = file.Read("transformer.timestep");
        Assert.Equal(new[] { 999f, 312.5f }, timestep.data<float>().ToArray());
    }

    [Fact]
    public void RoundTripsEveryDtypeThroughTheWriter()
    {
        string dir = Directory.CreateTempSubdirectory("st").FullName;
        try
        {
            var tensors = new Dictionary<string, Tensor>
            {
                ["f32"] = tensor(new[] { 1.5f, -2.25f, 3e-8f }),
                ["f64"] = tensor(new[] { Math.PI, -1.0 }),
                ["bf16"] = tensor(new[] { 1.5f, -2.25f }).to(ScalarType.BFloat16),
                ["f16"] = tensor(new[] { 0.1f, 65504f }).to(ScalarType.Float16),
                ["i64"] = tensor(new long[] { long.MaxValue, -3 }),
                ["i32"] = tensor(new[] { 7, -8 }),
                ["i16"] = tensor(new short[] { 300, -300 }),
                ["i8"] = tensor(new sbyte[] { -5, 5 }),
                ["u8"] = tensor(new byte[] { 0, 255 }),
                ["bool"] = tensor(new[] { true, false }),
                ["scalar"] = tensor(4f),
                ["empty"] = zeros(0, 3),
            };
            string path = Path.Combine(dir, "all.safetensors");
            SafetensorsWriter.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            using var file = SafetensorsFile.Open(path);
            Assert.Equal("pt", file.Header.Metadata["format"]);
            foreach (var (name, expected) in tensors)
            {
                using var actual = file.Read(name);
                Assert.Equal(expected.dtype, actual.dtype);
                Assert.Equal(expected.shape, actual.shape);
                Assert.True(actual.equal(expected).all().item<bool>(), name);
            }
            using var converted = file.Read("bf16", ScalarType.Float32);
            Assert.Equal(new[] { 1.5f, -2.25f }, converted.data<float>().ToArray());
            using var ints = file.Read("i32", ScalarType.Float16);
            Assert.Equal(ScalarType.Int32, ints.dtype); // integer tensors keep their type
        }
        finally { Directory.Delete(dir, true); }
    }
}
