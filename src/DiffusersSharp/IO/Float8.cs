using static TorchSharp.torch;

namespace DiffusersSharp.IO;

/// <summary>Decodes the two float8 formats of safetensors (TorchSharp has no float8 type) to float32.</summary>
internal static class Float8
{
    private static readonly float[] E4M3 = Table(exponentBits: 4, bias: 7, hasInfinity: false);
    private static readonly float[] E5M2 = Table(exponentBits: 5, bias: 15, hasInfinity: true);

    public static Tensor Decode(byte[] bytes, SafetensorsDtype dtype)
    {
        var table = dtype == SafetensorsDtype.F8_E4M3 ? E4M3 : E5M2;
        var values = new float[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) values[i] = table[bytes[i]];
        return tensor(values);
    }

    /// <summary>Value of every byte: sign, exponent, mantissa; E4M3 ("fn") has no infinities and NaN only at S.1111.111.</summary>
    private static float[] Table(int exponentBits, int bias, bool hasInfinity)
    {
        int mantissaBits = 7 - exponentBits;
        int maxExponent = (1 << exponentBits) - 1;
        var table = new float[256];
        for (int b = 0; b < 256; b++)
        {
            int sign = b >> 7, exponent = (b >> mantissaBits) & maxExponent, mantissa = b & ((1 << mantissaBits) - 1);
            double value;
            if (exponent == maxExponent && hasInfinity)
                value = mantissa == 0 ? double.PositiveInfinity : double.NaN;
            else if (exponent == maxExponent && mantissa == (1 << mantissaBits) - 1 && !hasInfinity)
                value = double.NaN;
            else if (exponent == 0)
                value = mantissa / (double)(1 << mantissaBits) * Math.Pow(2, 1 - bias);
            else
                value = (1 + mantissa / (double)(1 << mantissaBits)) * Math.Pow(2, exponent - bias);
            table[b] = (float)(sign == 1 ? -value : value);
        }
        return table;
    }
}
