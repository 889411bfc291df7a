using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>Comparisons of 8-bit images against diffusers' float images.</summary>
public static class ImageAssert
{
    /// <summary>
    /// Every pixel of <paramref name="image"/> is diffusers' float value (NHWC in [0, 1]) rounded to 8 bits, except where
    /// that value sits on a rounding midpoint (then within 0.501 levels): our float image is within ~1e-5 of theirs.
    /// </summary>
    public static void RoundedFrom(Tensor expectedImage, ImageBuffer image)
    {
        var expected = expectedImage.flatten().data<float>().ToArray();
        var pixels = image.Pixels;
        Assert.Equal(expected.Length, pixels.Length);
        var off = Enumerable.Range(0, pixels.Length).Where(i => pixels[i] != (int)Math.Round(expected[i] * 255)).ToList();
        Assert.All(off, i => Assert.True(Math.Abs(pixels[i] - expected[i] * 255) <= 0.501, $"pixel {i}: {pixels[i]} vs {expected[i] * 255}"));
    }
}
