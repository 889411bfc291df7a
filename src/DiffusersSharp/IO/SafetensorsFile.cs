using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.IO;

/// <summary>
/// A safetensors file opened for reading tensors. The header is validated on open; tensor data is memory-mapped
/// (copy-on-write, so nothing is ever written back) and only read when a tensor is asked for.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    private readonly Dictionary<ScalarType, Tensor> _mappings = new();
    private bool _disposed;

    /// <summary>The validated header.</summary>
    public SafetensorsHeader Header { get; }

    /// <summary>Tensor entries by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors => Header.Tensors;

    private SafetensorsFile(SafetensorsHeader header) => Header = header;

    /// <summary>Opens <paramref name="path"/> and validates its header.</summary>
    /// <exception cref="SafetensorsFormatException">The file is malformed.</exception>
    public static SafetensorsFile Open(string path) => new(SafetensorsHeader.Read(path));

    /// <summary>The TorchSharp dtype stored for a safetensors dtype, or null for the float8 types TorchSharp lacks.</summary>
    public static ScalarType? StorageType(SafetensorsDtype dtype) => dtype switch
    {
        SafetensorsDtype.F64 => ScalarType.Float64,
        SafetensorsDtype.F32 => ScalarType.Float32,
        SafetensorsDtype.F16 => ScalarType.Float16,
        SafetensorsDtype.BF16 => ScalarType.BFloat16,
        SafetensorsDtype.I64 => ScalarType.Int64,
        SafetensorsDtype.I32 => ScalarType.Int32,
        SafetensorsDtype.I16 => ScalarType.Int16,
        SafetensorsDtype.I8 => ScalarType.Int8,
        SafetensorsDtype.U8 => ScalarType.Byte,
        SafetensorsDtype.BOOL => ScalarType.Bool,
        _ => null,
    };

    /// <summary>
    /// Reads one tensor. With no <paramref name="dtype"/> the stored type is kept (float8 becomes float32). On the CPU in
    /// the stored type the result is a zero-copy view of the mapped file; otherwise it is converted straight from the
    /// mapping onto <paramref name="device"/>, so no second host copy of the weights is made.
    /// </summary>
    public Tensor Read(string name, ScalarType? dtype = null, Device? device = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!Header.Tensors.TryGetValue(name, out var info))
            throw new KeyNotFoundException($"{System.IO.Path.GetFileName(Header.Path)} has no tensor '{name}'.");
        device ??= CPU;
        var stored = StorageType(info.Dtype);
        if (stored is null)
            return Float8.Decode(ReadBytes(info), info.Dtype).reshape(info.Shape).to(dtype ?? ScalarType.Float32, device);
        var target = dtype is { } d && IsFloat(stored.Value) ? d : stored.Value;
        using var scope = NewDisposeScope();
        Tensor source;
        long absolute = Header.DataOffset + info.Begin;
        int itemSize = SafetensorsHeader.ItemSize(info.Dtype);
        if (info.ElementCount == 0)
            source = empty(info.Shape, stored.Value);
        else if (absolute % itemSize == 0)
            source = Mapping(stored.Value).narrow(0, absolute / itemSize, info.ElementCount).view(info.Shape);
        else
            source = Unaligned.FromBytes(ReadBytes(info), stored.Value).view(info.Shape);
        var result = source.dtype == target && source.device == device ? source : source.to(target, device);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Reads every tensor (see <see cref="Read"/>).</summary>
    public Dictionary<string, Tensor> ReadAll(ScalarType? dtype = null, Device? device = null) =>
        Header.Tensors.Keys.ToDictionary(k => k, k => Read(k, dtype, device), StringComparer.Ordinal);

    private static bool IsFloat(ScalarType t) =>
        t is ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16;

    private Tensor Mapping(ScalarType type)
    {
        if (!_mappings.TryGetValue(type, out var mapped))
        {
            long length = new FileInfo(Header.Path).Length;
            int itemSize = (int)type.ElementSize();
            mapped = from_file(Header.Path, shared: false, size: length / itemSize, dtype: type).DetachFromDisposeScope();
            _mappings[type] = mapped;
        }
        return mapped;
    }

    private byte[] ReadBytes(SafetensorsTensorInfo info)
    {
        using var stream = new FileStream(Header.Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        stream.Position = Header.DataOffset + info.Begin;
        var bytes = new byte[info.ByteLength];
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>Releases the file mappings. Tensors already read keep their own reference to the mapped memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var m in _mappings.Values) m.Dispose();
        _mappings.Clear();
    }

    /// <summary>Builds tensors from bytes that cannot be mapped in place (offset not a multiple of the item size).</summary>
    private static class Unaligned
    {
        public static Tensor FromBytes(byte[] bytes, ScalarType type)
        {
            switch (type)
            {
                case ScalarType.Float64: return tensor(Cast<double>(bytes));
                case ScalarType.Float32: return tensor(Cast<float>(bytes));
                case ScalarType.Int64: return tensor(Cast<long>(bytes));
                case ScalarType.Int32: return tensor(Cast<int>(bytes));
                case ScalarType.Int16: return tensor(Cast<short>(bytes));
                case ScalarType.Int8: return tensor(Cast<sbyte>(bytes));
                case ScalarType.Byte: return tensor(bytes);
                case ScalarType.Bool: return tensor(bytes.Select(b => b != 0).ToArray());
                case ScalarType.Float16:
                    return tensor(Cast<Half>(bytes).Select(h => (float)h).ToArray()).to(ScalarType.Float16);
                case ScalarType.BFloat16:
                    // bfloat16 is the upper half of a float32: widening is exact, and so is the cast back.
                    return tensor(Cast<ushort>(bytes).Select(u => BitConverter.Int32BitsToSingle(u << 16)).ToArray()).to(ScalarType.BFloat16);
                default: throw new NotSupportedException(type.ToString());
            }
        }

        private static T[] Cast<T>(byte[] bytes) where T : struct =>
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(bytes).ToArray();
    }
}
