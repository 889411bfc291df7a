using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>What the KL VAEs (<see cref="AutoencoderKL"/>, <see cref="AutoencoderKLFlux2"/>) share around their encoder and
/// decoder: the input checks before any compute, and slicing (one batch item at a time, diffusers' <c>use_slicing</c>).</summary>
internal static class VaeInputs
{
    /// <summary>Throws unless <paramref name="t"/> is a non-empty NCHW tensor of <paramref name="channels"/> channels in the
    /// dtype and on the device of <paramref name="vae"/>'s weights.</summary>
    public static void Check(nn.Module vae, Tensor t, int channels, string what, string paramName)
    {
        ArgumentNullException.ThrowIfNull(t, paramName);
        if (t.dim() != 4)
            throw new ArgumentException($"the {what} must be NCHW [B, {channels}, H, W]; got shape [{string.Join(", ", t.shape)}].", paramName);
        if (t.shape[1] != channels)
            throw new ArgumentException($"the {what} must have {channels} channels (dimension 1); got shape [{string.Join(", ", t.shape)}].", paramName);
        if (t.shape[0] == 0 || t.shape[2] == 0 || t.shape[3] == 0)
            throw new ArgumentException($"the {what} is empty: shape [{string.Join(", ", t.shape)}].", paramName);
        var weight = vae.parameters().First();
        if (t.dtype != weight.dtype)
            throw new ArgumentException($"the {what} is {t.dtype} but the VAE weights are {weight.dtype}; convert it with .to({weight.dtype}).", paramName);
        if (t.device_type != weight.device_type || t.device_index != weight.device_index)
            throw new ArgumentException($"the {what} is on {t.device} but the VAE is on {weight.device}; move it first.", paramName);
    }

    /// <summary>Throws unless an image's height and width are multiples of the VAE scale factor.</summary>
    public static void CheckImageSize(Tensor x, int vaeScaleFactor, string paramName)
    {
        if (x.shape[2] % vaeScaleFactor != 0 || x.shape[3] % vaeScaleFactor != 0)
            throw new ArgumentException(
                $"image height and width must be multiples of the VAE scale factor {vaeScaleFactor}; got {x.shape[2]}x{x.shape[3]}. Resize or crop the image first.",
                paramName);
    }

    /// <summary><paramref name="one"/> on the whole batch, or with <paramref name="slicing"/> on each item, concatenated.</summary>
    public static Tensor Sliced(Tensor x, bool slicing, Func<Tensor, Tensor> one) =>
        slicing && x.shape[0] > 1 ? cat(x.split(1).Select(one).ToArray(), 0) : one(x);
}
