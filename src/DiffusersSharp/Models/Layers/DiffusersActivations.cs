using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>The activations diffusers' <c>get_activation</c> maps names to that this library implements: silu (swish) and
/// the exact (erf) gelu (<c>nn.GELU()</c>).</summary>
internal static class DiffusersActivations
{
    /// <summary>Whether <paramref name="name"/> is one of them.</summary>
    public static bool IsKnown(string? name) => name is "silu" or "swish" or "gelu";

    /// <summary>Applies activation <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">An activation this library does not implement.</exception>
    public static Tensor Apply(string name, Tensor x) => name switch
    {
        "silu" or "swish" => nn.functional.silu(x),
        "gelu" => nn.functional.gelu(x),
        _ => throw new ArgumentException($"activation '{name}' is not supported (silu, swish and gelu are).", nameof(name)),
    };
}
