using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// The activations transformers' <c>ACT2FN</c> maps names to, written with the same operations (so bf16/fp16 rounding
/// follows the Python code, not a fused kernel).
/// </summary>
internal static class HfActivations
{
    /// <summary>Names this library implements.</summary>
    public static readonly string[] Known = ["quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish"];

    /// <summary>Throws when <paramref name="name"/> is not an activation this library implements.</summary>
    public static void Validate(string name, string field)
    {
        if (!Known.Contains(name))
            throw new ArgumentException($"{field} '{name}' is not supported (supported: {string.Join(", ", Known)}).", field);
    }

    public static Tensor Apply(string name, Tensor x) => name switch
    {
        // QuickGELUActivation: input * sigmoid(1.702 * input)
        "quick_gelu" => x * (x * 1.702).sigmoid(),
        // GELUActivation: the exact (erf) GELU
        "gelu" => nn.functional.gelu(x),
        // NewGELUActivation: the tanh approximation written out, as in the Python code
        "gelu_new" => 0.5 * x * (1.0 + (Math.Sqrt(2.0 / Math.PI) * (x + 0.044715 * x.pow(3.0))).tanh()),
        "gelu_pytorch_tanh" => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "relu" => nn.functional.relu(x),
        "silu" or "swish" => nn.functional.silu(x),
        _ => throw new ArgumentException($"activation '{name}' is not supported (supported: {string.Join(", ", Known)}).", nameof(name)),
    };
}
