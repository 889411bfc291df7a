using static TorchSharp.torch;

namespace DiffusersSharp.Runtime;

/// <summary>Names of the floating-point dtypes the pipelines run in.</summary>
public static class TorchDtypes
{
    /// <summary>Parses float32/fp32, bfloat16/bf16, float16/fp16/half (as torch names them too: "torch.bfloat16").</summary>
    public static ScalarType Parse(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        string n = name.Trim().ToLowerInvariant();
        if (n.StartsWith("torch.", StringComparison.Ordinal)) n = n[6..];
        return n switch
        {
            "float32" or "fp32" or "float" => ScalarType.Float32,
            "bfloat16" or "bf16" => ScalarType.BFloat16,
            "float16" or "fp16" or "half" => ScalarType.Float16,
            _ => throw new ArgumentException($"Unknown dtype '{name}': expected float32, bfloat16 or float16.", nameof(name)),
        };
    }

    /// <summary>The diffusers-style name of a dtype ("float32", "bfloat16", ...).</summary>
    public static string Name(ScalarType type) => type switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        ScalarType.Float64 => "float64",
        _ => type.ToString().ToLowerInvariant(),
    };
}
