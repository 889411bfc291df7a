using System.Text;
using DiffusersSharp.IO;

namespace DiffusersSharp.Tests.IO;

/// <summary>Every kind of malformed file gets its own specific error, without a crash or a large allocation.</summary>
public sealed class MalformedSafetensorsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("bad-st").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_dir, name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>A file with the given header JSON and <paramref name="dataBytes"/> bytes of data.</summary>
    private static byte[] File(string json, int dataBytes, long? declaredHeaderLength = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + dataBytes];
        BitConverter.GetBytes((ulong)(declaredHeaderLength ?? header.Length)).CopyTo(bytes, 0);
        header.CopyTo(bytes, 8);
        return bytes;
    }

    private string Error(byte[] bytes)
    {
        string path = Write("t.safetensors", bytes);
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsHeader.Read(path));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void ValidFileIsAccepted()
    {
        string path = Write("ok.safetensors", File("""{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8));
        var header = SafetensorsHeader.Read(path);
        Assert.Equal(new long[] { 2 }, header.Tensors["a"].Shape);
        Assert.Equal("pt", header.Metadata["format"]);
    }

    [Fact]
    public void TooShortForTheLength() => Assert.Contains("too short", Error([1, 2, 3]));

    [Fact]
    public void HeaderLengthPastTheEnd() =>
        Assert.Contains("runs past the end", Error(File("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4, declaredHeaderLength: 5000)));

    [Fact]
    public void HugeHeaderLengthIsRefusedBeforeAllocating() =>
        Assert.Contains("exceeds", Error(File("{}", 0, declaredHeaderLength: long.MaxValue)));

    [Fact]
    public void BadJson() => Assert.Contains("not valid JSON", Error(File("""{"a": {"dtype": "F32", """, 0)));

    [Fact]
    public void HeaderNotAnObject() => Assert.Contains("must be a JSON object", Error(File("[1,2]", 0)));

    [Fact]
    public void UnknownDtype() =>
        Assert.Contains("unknown dtype 'F128'", Error(File("""{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}""", 16)));

    [Fact]
    public void ShapeAndSizeMismatch() =>
        Assert.Contains("needs 12 bytes but data_offsets span 8", Error(File("""{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8)));

    [Fact]
    public void OffsetsOutOfRange_TruncatedData() =>
        Assert.Contains("run past the data section", Error(File("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 10)));

    [Fact]
    public void OffsetsReversed() =>
        Assert.Contains("invalid data_offsets", Error(File("""{"a":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}}""", 8)));

    [Fact]
    public void OverlappingRanges() =>
        Assert.Contains("overlapping", Error(File(
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12)));

    [Fact]
    public void DuplicateNames() =>
        Assert.Contains("appears twice", Error(File(
            """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8)));

    [Fact]
    public void NegativeDimension() =>
        Assert.Contains("negative dimension", Error(File("""{"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}}""", 16)));

    [Fact]
    public void HugeShapeDoesNotOverflow() =>
        Assert.Contains("needs more bytes", Error(File(
            """{"a":{"dtype":"F64","shape":[4611686018427387904,4611686018427387904,8],"data_offsets":[0,8]}}""", 8)));

    [Fact]
    public void GapInData() =>
        Assert.Contains("gap of 4 bytes", Error(File("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8)));

    [Fact]
    public void TrailingBytesNotCovered() =>
        Assert.Contains("cover 4", Error(File("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 12)));

    [Fact]
    public void MetadataMustHoldStrings() =>
        Assert.Contains("__metadata__ value 'n' is not a string", Error(File("""{"__metadata__":{"n":1}}""", 0)));

    [Fact]
    public void MissingShape() =>
        Assert.Contains("no shape array", Error(File("""{"a":{"dtype":"F32","data_offsets":[0,4]}}""", 4)));

    [Fact]
    public void Float8IsConvertedToFloat32()
    {
        // E4M3: 0x38 = 1.0, 0xC0 = -2.0, 0x7F = NaN; E5M2: 0x3C = 1.0, 0x7C = +inf.
        var bytes = File("""{"a":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[3,5]}}""", 5);
        int data = bytes.Length - 5;
        new byte[] { 0x38, 0xC0, 0x7F, 0x3C, 0x7C }.CopyTo(bytes, data);
        using var file = SafetensorsFile.Open(Write("f8.safetensors", bytes));
        using var a = file.Read("a");
        var av = a.data<float>().ToArray();
        Assert.Equal(1f, av[0]);
        Assert.Equal(-2f, av[1]);
        Assert.True(float.IsNaN(av[2]));
        using var b = file.Read("b");
        Assert.Equal(new[] { 1f, float.PositiveInfinity }, b.data<float>().ToArray());
    }
}
