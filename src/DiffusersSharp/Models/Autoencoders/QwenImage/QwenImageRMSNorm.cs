using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>QwenImageRMS_norm</c> (channel-first, no bias, as the Qwen-Image VAE builds it): <c>F.normalize</c> over
/// the channels (x / max(‖x‖₂, 1e-12); in float32 for 16-bit inputs, then cast back, as diffusers v0.37+ does), times
/// √dim, times the learned <c>gamma</c> ([dim, 1, 1, 1] for video tensors, [dim, 1, 1] for images).
/// </summary>
public sealed class QwenImageRMSNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter gamma;
#pragma warning restore IDE1006
    private readonly double _scale;

    /// <summary>Creates the norm over <paramref name="dim"/> channels; <paramref name="images"/> for [N, C, H, W] inputs.</summary>
    public QwenImageRMSNorm(long dim, bool images, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageRMSNorm))
    {
        _scale = Math.Sqrt(dim);
        long[] shape = images ? [dim, 1, 1] : [dim, 1, 1, 1];
        gamma = new Parameter(ones(shape, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>Normalises <paramref name="x"/> over dimension 1.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var input = x.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? x.to(ScalarType.Float32) : x;
        var normalized = (input / linalg.vector_norm(input, 2, [1L], keepdim: true).clamp_min(1e-12)).to(x.dtype);
        // (normalized * scale) * gamma in diffusers' order. The scale is applied out of place: libtorch's out-of-place
        // multiply by a double computes 16-bit tensors in float32 with the exact scale, as PyTorch's `tensor * float`
        // does, whereas TorchSharp's in-place mul_(double) on bfloat16 rounds the scale to bfloat16 first.
        return (normalized * _scale).mul_(gamma).MoveToOuterDisposeScope();
    }
}
