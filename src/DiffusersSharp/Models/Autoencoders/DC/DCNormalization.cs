using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' <c>get_normalization</c> as the DC-AE's blocks use it (eps 1e-5, affine, with a bias), and the way each
/// call site applies the norm it returns: <c>"rms_norm"</c> is an <see cref="RMSNorm"/> with a bias over the channels of an
/// NCHW map (channels moved last and back, diffusers' <c>movedim(1, -1)</c>), <c>"batch_norm"</c> a <c>BatchNorm2d</c>
/// on the map itself, with its running statistics (evaluation mode). diffusers' third type, <c>"layer_norm"</c>, is
/// applied by these blocks to the map's last (width) axis, which only runs when the width equals the channels: it is
/// rejected by <see cref="AutoencoderDCConfig.Validate"/>.
/// </summary>
internal static class DCNormalization
{
    /// <summary>Whether <paramref name="normType"/> is one this port builds.</summary>
    public static bool IsSupported(string? normType) => normType is "rms_norm" or "batch_norm";

    /// <summary>The norm of <paramref name="normType"/> over <paramref name="channels"/> channels.</summary>
    public static nn.Module<Tensor, Tensor> Create(string normType, long channels, Device? device, ScalarType? dtype) => normType switch
    {
        "rms_norm" => RMSNorm.WithBias(channels, 1e-5, device, dtype),
        "batch_norm" => nn.BatchNorm2d(channels, eps: 1e-5, momentum: 0.1, affine: true, track_running_stats: true, device: device, dtype: dtype),
        _ => throw new ArgumentException($"norm type '{normType}' is not supported (rms_norm and batch_norm are).", nameof(normType)),
    };

    /// <summary>Applies <paramref name="norm"/> (from <see cref="Create"/>) to the NCHW map <paramref name="x"/>.</summary>
    public static Tensor Apply(nn.Module<Tensor, Tensor> norm, Tensor x)
    {
        if (norm is not RMSNorm rms) return norm.forward(x);
        using var channelsLast = x.movedim([1L], [-1L]);
        using var normed = rms.forward(channelsLast);
        return normed.movedim([-1L], [1L]);
    }
}
