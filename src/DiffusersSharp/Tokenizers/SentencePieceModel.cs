using System.Text;

namespace DiffusersSharp.Tokenizers;

/// <summary>The fields of a SentencePiece <c>ModelProto</c> (spiece.model) that encoding needs, read from the protobuf wire format.</summary>
internal sealed class SentencePieceModel
{
    /// <summary>SentencePiece piece types (sentencepiece_model.proto).</summary>
    public enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    public List<(string Piece, float Score, PieceType Type)> Pieces { get; } = [];
    public byte[] PrecompiledCharsMap { get; private set; } = [];
    public bool AddDummyPrefix { get; private set; } = true;
    public bool RemoveExtraWhitespaces { get; private set; } = true;
    public bool EscapeWhitespaces { get; private set; } = true;
    public int ModelType { get; private set; } = 1;
    public int UnkId { get; private set; }
    public bool TreatWhitespaceAsSuffix { get; private set; }

    public static SentencePieceModel Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"SentencePiece model not found: {path}", path);
        var model = new SentencePieceModel();
        try
        {
            model.ReadModel(File.ReadAllBytes(path));
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or OverflowException or DecoderFallbackException)
        {
            throw new InvalidDataException($"{path} is not a valid SentencePiece model (protobuf ModelProto): {e.Message}", e);
        }
        if (model.Pieces.Count == 0) throw new InvalidDataException($"{path} is not a valid SentencePiece model: it has no pieces.");
        if (model.ModelType != 1) throw new InvalidDataException($"{path}: model_type {model.ModelType} is not Unigram (1), the only type T5 uses.");
        return model;
    }

    private void ReadModel(byte[] data)
    {
        var r = new Reader(data, 0, data.Length);
        while (!r.End)
        {
            var (field, wire) = r.Tag();
            switch (field, wire)
            {
                case (1, 2): ReadPiece(r.Sub()); break;
                case (2, 2): ReadTrainerSpec(r.Sub()); break;
                case (3, 2): ReadNormalizerSpec(r.Sub()); break;
                default: r.Skip(wire); break;
            }
        }
    }

    private void ReadPiece(Reader r)
    {
        string piece = "";
        float score = 0;
        var type = PieceType.Normal;
        while (!r.End)
        {
            var (field, wire) = r.Tag();
            switch (field, wire)
            {
                case (1, 2): piece = r.String(); break;
                case (2, 5): score = r.Float(); break;
                case (3, 0): type = (PieceType)(int)r.Varint(); break;
                default: r.Skip(wire); break;
            }
        }
        Pieces.Add((piece, score, type));
    }

    private void ReadTrainerSpec(Reader r)
    {
        while (!r.End)
        {
            var (field, wire) = r.Tag();
            switch (field, wire)
            {
                case (3, 0): ModelType = (int)r.Varint(); break;
                case (24, 0): TreatWhitespaceAsSuffix = r.Varint() != 0; break;
                case (40, 0): UnkId = (int)r.Varint(); break;
                default: r.Skip(wire); break;
            }
        }
    }

    private void ReadNormalizerSpec(Reader r)
    {
        while (!r.End)
        {
            var (field, wire) = r.Tag();
            switch (field, wire)
            {
                case (2, 2): PrecompiledCharsMap = r.Bytes(); break;
                case (3, 0): AddDummyPrefix = r.Varint() != 0; break;
                case (4, 0): RemoveExtraWhitespaces = r.Varint() != 0; break;
                case (5, 0): EscapeWhitespaces = r.Varint() != 0; break;
                default: r.Skip(wire); break;
            }
        }
    }

    /// <summary>Protobuf wire-format reader over a slice of the file.</summary>
    private sealed class Reader(byte[] data, int pos, int end)
    {
        private int _pos = pos;

        public bool End => _pos >= end;

        public (int Field, int Wire) Tag()
        {
            ulong tag = Varint();
            return ((int)(tag >> 3), (int)(tag & 7));
        }

        public ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; ; shift += 7)
            {
                if (shift > 63) throw new OverflowException("varint longer than 10 bytes");
                byte b = Next();
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
            }
        }

        public float Float()
        {
            Need(4);
            float f = BitConverter.ToSingle(data, _pos);
            _pos += 4;
            return f;
        }

        public byte[] Bytes()
        {
            int n = Length();
            var b = data.AsSpan(_pos, n).ToArray();
            _pos += n;
            return b;
        }

        public string String()
        {
            int n = Length();
            string s = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(data, _pos, n);
            _pos += n;
            return s;
        }

        public Reader Sub()
        {
            int n = Length();
            var sub = new Reader(data, _pos, _pos + n);
            _pos += n;
            return sub;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: Need(8); _pos += 8; break;
                case 2: { int n = Length(); _pos += n; break; }
                case 5: Need(4); _pos += 4; break;
                default: throw new ArgumentException($"unsupported protobuf wire type {wire} at byte {_pos}");
            }
        }

        private int Length()
        {
            ulong n = Varint();
            if (n > (ulong)(end - _pos)) throw new ArgumentException($"length {n} at byte {_pos} runs past the end of its message");
            return (int)n;
        }

        private byte Next()
        {
            Need(1);
            return data[_pos++];
        }

        private void Need(int n)
        {
            if (_pos + n > end) throw new ArgumentException($"truncated protobuf data at byte {_pos}");
        }
    }
}
