using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>GroupNorm construction shared by the VAE and UNet layers.</summary>
internal static class AffineGroupNorm
{
    /// <summary>
    /// An affine GroupNorm initialised as PyTorch does (weight 1, bias 0). TorchSharp 0.107's <c>nn.GroupNorm</c>
    /// leaves its affine parameters uninitialised (garbage, sometimes NaN), which only matters for randomly built
    /// models: loading replaces them.
    /// </summary>
    public static GroupNorm Create(long groups, long channels, double eps, Device? device, ScalarType? dtype)
    {
        var norm = nn.GroupNorm(groups, channels, eps, affine: true, device: device, dtype: dtype);
        if (device?.type != DeviceType.META)
        {
            using var _ = no_grad();
            nn.init.ones_(norm.weight!);
            nn.init.zeros_(norm.bias!);
        }
        return norm;
    }
}
