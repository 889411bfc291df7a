using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// FLUX.2's SwiGLU activation (diffusers <c>Flux2SwiGLU</c>): the gate projection is fused into the preceding Linear, so
/// the input's last dimension holds [gate, value] halves and the output is <c>silu(gate) · value</c>, half as wide. No
/// parameters.
/// </summary>
public sealed class Flux2SwiGLU : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the activation.</summary>
    public Flux2SwiGLU() : base(nameof(Flux2SwiGLU)) => RegisterComponents();

    /// <summary><c>silu(x[..., :half]) · x[..., half:]</c>.</summary>
    /// <exception cref="ArgumentException">The last dimension is odd.</exception>
    public override Tensor forward(Tensor x)
    {
        long width = x.shape[^1];
        if (width % 2 != 0) throw new ArgumentException($"Flux2SwiGLU needs an even last dimension, got {width}.", nameof(x));
        long half = width / 2;
        using var gate = x.narrow(-1, 0, half);
        using var value = x.narrow(-1, half, half);
        using var activated = nn.functional.silu(gate);
        return activated * value;
    }
}
