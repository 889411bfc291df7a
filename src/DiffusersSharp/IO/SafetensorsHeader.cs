using System.Text.Json;

namespace DiffusersSharp.IO;

/// <summary>Element types a safetensors file may declare.</summary>
public enum SafetensorsDtype
{
    /// <summary>64-bit float.</summary>
    F64,
    /// <summary>32-bit float.</summary>
    F32,
    /// <summary>IEEE half.</summary>
    F16,
    /// <summary>bfloat16.</summary>
    BF16,
    /// <summary>64-bit signed integer.</summary>
    I64,
    /// <summary>32-bit signed integer.</summary>
    I32,
    /// <summary>16-bit signed integer.</summary>
    I16,
    /// <summary>8-bit signed integer.</summary>
    I8,
    /// <summary>8-bit unsigned integer.</summary>
    U8,
    /// <summary>Boolean, one byte each.</summary>
    BOOL,
    /// <summary>8-bit float, 4 exponent bits (the "fn" variant: no infinities). Converted to a float dtype on load.</summary>
    F8_E4M3,
    /// <summary>8-bit float, 5 exponent bits. Converted to a float dtype on load.</summary>
    F8_E5M2,
}

/// <summary>One tensor entry of a safetensors header. Offsets are relative to the start of the data section.</summary>
/// <param name="Name">The tensor's key.</param>
/// <param name="Dtype">Its element type.</param>
/// <param name="Shape">Its shape (empty for a scalar).</param>
/// <param name="Begin">First byte, relative to the data section.</param>
/// <param name="End">One past the last byte, relative to the data section.</param>
public sealed record SafetensorsTensorInfo(string Name, SafetensorsDtype Dtype, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Number of bytes of the tensor's data.</summary>
    public long ByteLength => End - Begin;
}

/// <summary>A safetensors file that does not follow the format; the message says what is wrong and where.</summary>
public sealed class SafetensorsFormatException(string message) : IOException(message);

/// <summary>
/// The validated header of a safetensors file: 8-byte little-endian header length, JSON header, data section.
/// Nothing in the file is trusted before it is checked: lengths, JSON, dtypes, shapes against byte ranges, ranges inside
/// the data section, no overlaps or gaps, no duplicate names.
/// </summary>
public sealed class SafetensorsHeader
{
    /// <summary>Largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>The file the header was read from.</summary>
    public string Path { get; }

    /// <summary>Byte offset of the data section in the file (8 + header length).</summary>
    public long DataOffset { get; }

    /// <summary>Tensors by name, in file order of their data.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors { get; }

    /// <summary>The free-form <c>__metadata__</c> strings (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsHeader(string path, long dataOffset, IReadOnlyDictionary<string, SafetensorsTensorInfo> tensors,
        IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        DataOffset = dataOffset;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Bytes per element of a dtype.</summary>
    public static int ItemSize(SafetensorsDtype dtype) => dtype switch
    {
        SafetensorsDtype.F64 or SafetensorsDtype.I64 => 8,
        SafetensorsDtype.F32 or SafetensorsDtype.I32 => 4,
        SafetensorsDtype.F16 or SafetensorsDtype.BF16 or SafetensorsDtype.I16 => 2,
        _ => 1,
    };

    /// <summary>Reads and validates the header of <paramref name="path"/> without reading tensor data.</summary>
    /// <exception cref="SafetensorsFormatException">The file is not a valid safetensors file.</exception>
    public static SafetensorsHeader Read(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        long fileLength = stream.Length;
        string name = System.IO.Path.GetFileName(path);
        if (fileLength < 8)
            throw new SafetensorsFormatException($"{name}: file is {fileLength} bytes, too short for the 8-byte header length.");
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BitConverter.ToUInt64(lengthBytes);
        if (headerLength > MaxHeaderBytes)
            throw new SafetensorsFormatException($"{name}: header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit.");
        if ((long)headerLength > fileLength - 8)
            throw new SafetensorsFormatException($"{name}: header length {headerLength} runs past the end of the file ({fileLength} bytes).");
        var json = new byte[headerLength];
        stream.ReadExactly(json);
        long dataOffset = 8 + (long)headerLength;
        return Parse(path, json, dataOffset, fileLength - dataOffset);
    }

    private static SafetensorsHeader Parse(string path, byte[] json, long dataOffset, long dataLength)
    {
        string file = System.IO.Path.GetFileName(path);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException($"{file}: header is not valid JSON ({e.Message}).");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException($"{file}: header must be a JSON object.");
            var tensors = new List<SafetensorsTensorInfo>();
            var metadata = new Dictionary<string, string>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw new SafetensorsFormatException($"{file}: tensor name '{property.Name}' appears twice in the header.");
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw new SafetensorsFormatException($"{file}: __metadata__ must be an object of strings.");
                    foreach (var m in property.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new SafetensorsFormatException($"{file}: __metadata__ value '{m.Name}' is not a string.");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                tensors.Add(ParseTensor(file, property.Name, property.Value, dataLength));
            }
            CheckRanges(file, tensors, dataLength);
            var byName = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            foreach (var t in tensors.OrderBy(t => t.Begin)) byName[t.Name] = t;
            return new SafetensorsHeader(path, dataOffset, byName, metadata);
        }
    }

    private static SafetensorsTensorInfo ParseTensor(string file, string name, JsonElement e, long dataLength)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new SafetensorsFormatException($"{file}: entry '{name}' is not an object.");
        if (!e.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new SafetensorsFormatException($"{file}: tensor '{name}' has no dtype string.");
        string dtypeText = dtypeElement.GetString()!;
        if (!Enum.TryParse<SafetensorsDtype>(dtypeText, ignoreCase: false, out var dtype) || int.TryParse(dtypeText, out _))
            throw new SafetensorsFormatException($"{file}: tensor '{name}' has unknown dtype '{dtypeText}'.");
        if (!e.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new SafetensorsFormatException($"{file}: tensor '{name}' has no shape array.");
        var shape = new List<long>();
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim))
                throw new SafetensorsFormatException($"{file}: tensor '{name}' has a shape entry that is not an integer.");
            if (dim < 0)
                throw new SafetensorsFormatException($"{file}: tensor '{name}' has a negative dimension {dim}.");
            shape.Add(dim);
        }
        if (shape.Count > 16)
            throw new SafetensorsFormatException($"{file}: tensor '{name}' has {shape.Count} dimensions (at most 16).");
        if (!e.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw new SafetensorsFormatException($"{file}: tensor '{name}' needs data_offsets [begin, end].");
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new SafetensorsFormatException($"{file}: tensor '{name}' has invalid data_offsets.");
        if (end > dataLength)
            throw new SafetensorsFormatException(
                $"{file}: tensor '{name}' data_offsets [{begin}, {end}] run past the data section ({dataLength} bytes; truncated file?).");
        long expected = SafetensorsHeader.ItemSize(dtype);
        foreach (long dim in shape)
        {
            if (dim != 0 && expected > long.MaxValue / dim) { expected = long.MaxValue; break; } // overflow: cannot match
            expected *= dim;
        }
        if (expected != end - begin)
            throw new SafetensorsFormatException(
                $"{file}: tensor '{name}' shape [{string.Join(", ", shape)}] x {dtype} needs {(expected == long.MaxValue ? "more" : expected.ToString())} bytes but data_offsets span {end - begin}.");
        return new SafetensorsTensorInfo(name, dtype, shape.ToArray(), begin, end);
    }

    private static void CheckRanges(string file, List<SafetensorsTensorInfo> tensors, long dataLength)
    {
        long position = 0;
        SafetensorsTensorInfo? previous = null;
        foreach (var t in tensors.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin < position)
                throw new SafetensorsFormatException($"{file}: tensors '{previous!.Name}' and '{t.Name}' have overlapping data ranges.");
            if (t.Begin > position)
                throw new SafetensorsFormatException($"{file}: gap of {t.Begin - position} bytes in the data section before '{t.Name}'.");
            position = t.End;
            previous = t;
        }
        if (position != dataLength)
            throw new SafetensorsFormatException($"{file}: data section is {dataLength} bytes but the tensors cover {position}.");
    }

    /// <summary>Serializes tensors into the safetensors format (header padded to 8 bytes, as the reference writer does).</summary>
    internal static byte[] BuildHeader(IEnumerable<(string Name, SafetensorsDtype Dtype, long[] Shape, long Begin, long End)> entries,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            foreach (var e in entries)
            {
                w.WriteStartObject(e.Name);
                w.WriteString("dtype", e.Dtype.ToString());
                w.WriteStartArray("shape");
                foreach (long d in e.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(e.Begin);
                w.WriteNumberValue(e.End);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        var json = buffer.ToArray();
        int padded = (json.Length + 7) / 8 * 8;
        var result = new byte[8 + padded];
        BitConverter.GetBytes((ulong)padded).CopyTo(result, 0);
        json.CopyTo(result, 8);
        for (int i = 8 + json.Length; i < result.Length; i++) result[i] = (byte)' ';
        return result;
    }
}
