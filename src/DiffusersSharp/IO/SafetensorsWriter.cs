using static TorchSharp.torch;

namespace DiffusersSharp.IO;

/// <summary>Writes tensors in the safetensors format, atomically (a temporary file renamed into place).</summary>
public static class SafetensorsWriter
{
    /// <summary>Saves <paramref name="tensors"/> (sorted by name, as the reference writer does) to <paramref name="path"/>.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var names = tensors.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        var entries = new List<(string, SafetensorsDtype, long[], long, long)>();
        long offset = 0;
        foreach (var name in names)
        {
            var t = tensors[name];
            long bytes = t.NumberOfElements * t.ElementSize;
            entries.Add((name, ToSafetensors(t.dtype), t.shape, offset, offset + bytes));
            offset += bytes;
        }
        var header = SafetensorsHeader.BuildHeader(entries, metadata);
        AtomicFile.Write(path, stream =>
        {
            stream.Write(header);
            foreach (var name in names)
            {
                using var cpu = tensors[name].detach().cpu().contiguous();
                stream.Write(cpu.bytes);
            }
        });
    }

    /// <summary>The safetensors dtype of a TorchSharp dtype.</summary>
    public static SafetensorsDtype ToSafetensors(ScalarType type) => type switch
    {
        ScalarType.Float64 => SafetensorsDtype.F64,
        ScalarType.Float32 => SafetensorsDtype.F32,
        ScalarType.Float16 => SafetensorsDtype.F16,
        ScalarType.BFloat16 => SafetensorsDtype.BF16,
        ScalarType.Int64 => SafetensorsDtype.I64,
        ScalarType.Int32 => SafetensorsDtype.I32,
        ScalarType.Int16 => SafetensorsDtype.I16,
        ScalarType.Int8 => SafetensorsDtype.I8,
        ScalarType.Byte => SafetensorsDtype.U8,
        ScalarType.Bool => SafetensorsDtype.BOOL,
        _ => throw new NotSupportedException($"safetensors has no dtype for {type}."),
    };
}
