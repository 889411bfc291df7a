using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>diffusers' <c>get_block</c> (autoencoder_dc.py): the block a DC-AE level is made of, by its type name.</summary>
internal static class DCBlocks
{
    /// <summary>Whether <paramref name="blockType"/> names a block <see cref="Create"/> builds.</summary>
    public static bool IsKnown(string? blockType) => blockType is "ResBlock" or "EfficientViTBlock";

    /// <summary>
    /// A <see cref="ResBlock"/> (<paramref name="normType"/>, <paramref name="actFn"/>) or an <see cref="EfficientViTBlock"/>
    /// (<paramref name="normType"/> for its attention, <paramref name="qkvMultiscales"/>; the activation is not used) keeping
    /// <paramref name="channels"/> channels.
    /// </summary>
    public static nn.Module<Tensor, Tensor> Create(string blockType, long channels, long attentionHeadDim, string normType, string? actFn,
        int[] qkvMultiscales, Device? device, ScalarType? dtype) => blockType switch
    {
        "ResBlock" => new ResBlock(channels, channels, normType, actFn, device, dtype),
        "EfficientViTBlock" => new EfficientViTBlock(channels, attentionHeadDim: attentionHeadDim, normType: normType,
            qkvMultiscales: qkvMultiscales.Select(k => (long)k).ToArray(), device: device, dtype: dtype),
        _ => throw new ArgumentException($"Block with block_type='{blockType}' is not supported (ResBlock and EfficientViTBlock are).", nameof(blockType)),
    };
}
