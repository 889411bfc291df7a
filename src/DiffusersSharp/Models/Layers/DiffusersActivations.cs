using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>The activations diffusers' <c>get_activation</c> maps names to (its <c>ACT2CLS</c>): silu (swish), the exact
/// (erf) gelu (<c>nn.GELU()</c>), relu and mish. <see cref="IsKnown"/> is the subset the UNet-family configs accept.</summary>
internal static class DiffusersActivations
{
    /// <summary>Whether <paramref name="name"/> is silu, swish or gelu (the ones the UNet-family configs accept).</summary>
    public static bool IsKnown(string? name) => name is "silu" or "swish" or "gelu";

    /// <summary>Applies activation <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">An activation this library does not implement.</exception>
    public static Tensor Apply(string name, Tensor x) => name switch
    {
        "silu" or "swish" => nn.functional.silu(x),
        "gelu" => nn.functional.gelu(x),
        "relu" => nn.functional.relu(x),
        "mish" => nn.functional.mish(x),
        _ => throw new ArgumentException($"activation '{name}' is not supported (silu, swish, gelu, relu and mish are).", nameof(name)),
    };
}
