using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' conversion of a caption mask into the additive cross-attention bias (PixArt's and Sana's transformers):
/// a [B, S] mask of 1 (keep) / 0 (drop) becomes <c>(1 - mask) · -10000</c> in the activations' dtype, shaped [B, 1, S];
/// a mask of another rank is taken as a ready bias.
/// </summary>
internal static class EncoderAttentionBias
{
    /// <summary>Throws unless <paramref name="mask"/> (when given) is [B, S] or a [B, 1, S] bias for <paramref name="batch"/>
    /// captions of <paramref name="length"/> tokens.</summary>
    /// <exception cref="ArgumentException">Another shape.</exception>
    public static void Validate(Tensor? mask, long batch, long length)
    {
        if (mask is null) return;
        bool ok = (mask.dim() == 2 && mask.shape[0] == batch && mask.shape[1] == length)
            || (mask.dim() == 3 && mask.shape[0] == batch && mask.shape[1] == 1 && mask.shape[2] == length);
        if (!ok)
            throw new ArgumentException($"encoder_attention_mask must be [B={batch}, S={length}] (or a [B, 1, S] bias), got [{string.Join(", ", mask.shape)}].", "encoder_attention_mask");
    }

    /// <summary>The bias of <paramref name="mask"/> in <paramref name="dtype"/>, or null without a mask.</summary>
    public static Tensor? From(Tensor? mask, ScalarType dtype) =>
        mask is null ? null
        : mask.dim() == 2 ? ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)
        : mask.to(dtype);
}
