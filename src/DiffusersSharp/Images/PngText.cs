using System.IO.Compression;
using System.Text;

namespace DiffusersSharp.Images;

/// <summary>
/// PNG text chunks: adds <c>tEXt</c> (Latin-1) or <c>iTXt</c> (UTF-8, when the text is not Latin-1) chunks to encoded
/// PNG bytes, and reads <c>tEXt</c> / <c>zTXt</c> / <c>iTXt</c> back. Generation parameters go under the
/// <c>"parameters"</c> keyword, as other Stable Diffusion tools write them.
/// </summary>
public static class PngText
{
    private static readonly byte[] Signature = { 137, 80, 78, 71, 13, 10, 26, 10 };
    private static readonly uint[] CrcTable = BuildCrcTable();
    private static readonly Encoding Latin1 = Encoding.Latin1;

    /// <summary>The keyword under which generation parameters are stored.</summary>
    public const string ParametersKeyword = "parameters";

    /// <summary>Returns <paramref name="png"/> with one text chunk per entry inserted after IHDR.</summary>
    /// <exception cref="InvalidDataException"><paramref name="png"/> is not a PNG stream starting with IHDR.</exception>
    /// <exception cref="ArgumentException">A keyword is empty, longer than 79 bytes, or not printable Latin-1.</exception>
    public static byte[] Add(byte[] png, IEnumerable<KeyValuePair<string, string>> entries)
    {
        ArgumentNullException.ThrowIfNull(png);
        ArgumentNullException.ThrowIfNull(entries);
        if (png.Length < 33 || !png.AsSpan(0, 8).SequenceEqual(Signature) || Encoding.ASCII.GetString(png, 12, 4) != "IHDR")
            throw new InvalidDataException("Not a PNG stream (missing signature or IHDR).");
        int ihdrEnd = 8 + 12 + ReadUInt32(png, 8);
        using var ms = new MemoryStream(png.Length + 256);
        ms.Write(png, 0, ihdrEnd);
        foreach (var (key, value) in entries) WriteTextChunk(ms, key, value ?? "");
        ms.Write(png, ihdrEnd, png.Length - ihdrEnd);
        return ms.ToArray();
    }

    /// <summary>Reads every text chunk (<c>tEXt</c>, <c>zTXt</c>, <c>iTXt</c>) of a PNG stream; later duplicates win.</summary>
    /// <exception cref="InvalidDataException">The stream is not a well-formed PNG (bad signature, truncated chunk or CRC mismatch).</exception>
    public static Dictionary<string, string> Read(byte[] png)
    {
        ArgumentNullException.ThrowIfNull(png);
        if (png.Length < 8 || !png.AsSpan(0, 8).SequenceEqual(Signature)) throw new InvalidDataException("Not a PNG stream (bad signature).");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        int pos = 8;
        while (pos + 12 <= png.Length)
        {
            int length = ReadUInt32(png, pos);
            if (length < 0 || pos + 12L + length > png.Length) throw new InvalidDataException("PNG chunk runs past the end of the file.");
            string type = Encoding.ASCII.GetString(png, pos + 4, 4);
            var data = png.AsSpan(pos + 8, length);
            uint crc = Crc(png.AsSpan(pos + 4, length + 4));
            if (crc != (uint)ReadUInt32(png, pos + 8 + length)) throw new InvalidDataException($"PNG chunk {type} has a bad CRC.");
            switch (type)
            {
                case "tEXt":
                {
                    int z = data.IndexOf((byte)0);
                    if (z > 0) result[Latin1.GetString(data[..z])] = Latin1.GetString(data[(z + 1)..]);
                    break;
                }
                case "zTXt":
                {
                    int z = data.IndexOf((byte)0);
                    if (z > 0 && z + 2 <= data.Length) result[Latin1.GetString(data[..z])] = Latin1.GetString(Inflate(data[(z + 2)..]));
                    break;
                }
                case "iTXt":
                {
                    int z = data.IndexOf((byte)0);
                    if (z <= 0 || z + 3 > data.Length) break;
                    bool compressed = data[z + 1] != 0;
                    var rest = data[(z + 3)..];
                    int lang = rest.IndexOf((byte)0);
                    if (lang < 0) break;
                    rest = rest[(lang + 1)..];
                    int translated = rest.IndexOf((byte)0);
                    if (translated < 0) break;
                    rest = rest[(translated + 1)..];
                    result[Latin1.GetString(data[..z])] = Encoding.UTF8.GetString(compressed ? Inflate(rest) : rest.ToArray());
                    break;
                }
                case "IEND":
                    return result;
            }
            pos += 12 + length;
        }
        return result;
    }

    private static void WriteTextChunk(Stream s, string key, string value)
    {
        if (key.Length is < 1 or > 79 || key.Any(ch => ch > 255 || ch < 32 || (ch > 126 && ch < 161)) || key.StartsWith(' ') || key.EndsWith(' '))
            throw new ArgumentException($"PNG text keyword \"{key}\" must be 1-79 printable Latin-1 characters without leading or trailing spaces.", nameof(key));
        var body = new MemoryStream();
        body.Write(Latin1.GetBytes(key));
        body.WriteByte(0);
        bool latin1 = value.All(ch => ch <= 255);
        string type;
        if (latin1)
        {
            type = "tEXt";
            body.Write(Latin1.GetBytes(value));
        }
        else
        {
            type = "iTXt";
            body.WriteByte(0); // not compressed
            body.WriteByte(0); // compression method
            body.WriteByte(0); // empty language tag
            body.WriteByte(0); // empty translated keyword
            body.Write(Encoding.UTF8.GetBytes(value));
        }
        var chunk = new byte[12 + body.Length];
        WriteUInt32(chunk, 0, (uint)body.Length);
        Encoding.ASCII.GetBytes(type, 0, 4, chunk, 4);
        body.ToArray().CopyTo(chunk, 8);
        WriteUInt32(chunk, 8 + (int)body.Length, Crc(chunk.AsSpan(4, 4 + (int)body.Length)));
        s.Write(chunk);
    }

    private static byte[] Inflate(ReadOnlySpan<byte> data)
    {
        try
        {
            using var z = new ZLibStream(new MemoryStream(data.ToArray()), CompressionMode.Decompress);
            using var o = new MemoryStream();
            z.CopyTo(o);
            return o.ToArray();
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException("Compressed PNG text chunk is corrupt.", e);
        }
    }

    private static int ReadUInt32(byte[] b, int o) => (int)((uint)b[o] << 24 | (uint)b[o + 1] << 16 | (uint)b[o + 2] << 8 | b[o + 3]);

    private static void WriteUInt32(byte[] b, int o, uint v)
    {
        b[o] = (byte)(v >> 24);
        b[o + 1] = (byte)(v >> 16);
        b[o + 2] = (byte)(v >> 8);
        b[o + 3] = (byte)v;
    }

    /// <summary>The PNG / zlib CRC-32 (polynomial 0xEDB88320) of <paramref name="data"/>.</summary>
    internal static uint Crc(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (byte b in data) c = CrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    private static uint[] BuildCrcTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }
}
