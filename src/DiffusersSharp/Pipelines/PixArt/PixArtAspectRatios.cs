using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.PixArt;

/// <summary>
/// PixArt's resolution binning (diffusers' <c>use_resolution_binning</c> and <c>PixArtImageProcessor</c>): the requested
/// size is replaced by the trained size whose aspect ratio is closest, the image is generated there, and the decoded image
/// is resized (bilinear) to cover the requested size and center-cropped to it. The bins are PixArt's
/// <c>ASPECT_RATIO_1024_BIN</c> (sample_size 128), its halves and quarters (<c>ASPECT_RATIO_512_BIN</c>, sample_size 64;
/// <c>ASPECT_RATIO_256_BIN</c>, sample_size 32) and PixArt-Σ's <c>ASPECT_RATIO_2048_BIN</c> (sample_size 256).
/// </summary>
public static class PixArtAspectRatios
{
    // "ratio:HxW" in diffusers' order, which breaks ties (min takes the first closest).
    private const string Bins1024 =
        "0.25:512x2048 0.28:512x1856 0.32:576x1792 0.33:576x1728 0.35:576x1664 0.4:640x1600 0.42:640x1536 " +
        "0.48:704x1472 0.5:704x1408 0.52:704x1344 0.57:768x1344 0.6:768x1280 0.68:832x1216 0.72:832x1152 " +
        "0.78:896x1152 0.82:896x1088 0.88:960x1088 0.94:960x1024 1.0:1024x1024 1.07:1024x960 1.13:1088x960 " +
        "1.21:1088x896 1.29:1152x896 1.38:1152x832 1.46:1216x832 1.67:1280x768 1.75:1344x768 2.0:1408x704 " +
        "2.09:1472x704 2.4:1536x640 2.5:1600x640 3.0:1728x576 4.0:2048x512";

    private const string Bins2048 =
        "0.25:1024x4096 0.26:1024x3968 0.27:1024x3840 0.28:1024x3712 0.32:1152x3584 0.33:1152x3456 " +
        "0.35:1152x3328 0.4:1280x3200 0.42:1280x3072 0.48:1408x2944 0.5:1408x2816 0.52:1408x2688 " +
        "0.57:1536x2688 0.6:1536x2560 0.68:1664x2432 0.72:1664x2304 0.78:1792x2304 0.82:1792x2176 " +
        "0.88:1920x2176 0.94:1920x2048 1.0:2048x2048 1.07:2048x1920 1.13:2176x1920 1.21:2176x1792 " +
        "1.29:2304x1792 1.38:2304x1664 1.46:2432x1664 1.67:2560x1536 1.75:2688x1536 2.0:2816x1408 " +
        "2.09:2944x1408 2.4:3072x1280 2.5:3200x1280 2.89:3328x1152 3.0:3456x1152 3.11:3584x1152 " +
        "3.62:3712x1024 3.75:3840x1024 3.88:3968x1024 4.0:4096x1024";

    /// <summary>
    /// The bins of a transformer of <paramref name="sampleSize"/> (latent pixels): aspect ratio (diffusers' key, e.g.
    /// "0.57") and the (height, width) trained there, in diffusers' order.
    /// </summary>
    /// <exception cref="ArgumentException">No bins for that sample_size (diffusers: "Invalid sample size").</exception>
    public static IReadOnlyList<(string Ratio, int Height, int Width)> For(int sampleSize) => sampleSize switch
    {
        256 => Parse(Bins2048, 1),
        128 => Parse(Bins1024, 1),
        64 => Parse(Bins1024, 2),
        32 => Parse(Bins1024, 4),
        _ => throw new ArgumentException($"Resolution binning needs a transformer of sample_size 256, 128, 64 or 32 (PixArt's bins), this one has {sampleSize} (diffusers: Invalid sample size); turn it off."),
    };

    /// <summary>
    /// The bins SanaPipeline picks by the transformer's <paramref name="sampleSize"/> (its latents are 32x smaller than
    /// PixArt's 8x): 128 → <c>ASPECT_RATIO_4096_BIN</c> (2048's bins doubled, checked equal to diffusers' table),
    /// 64 → 2048, 32 → 1024, 16 → 512.
    /// </summary>
    /// <exception cref="ArgumentException">No bins for that sample_size (diffusers: "Invalid sample size").</exception>
    public static IReadOnlyList<(string Ratio, int Height, int Width)> ForSana(int sampleSize) => sampleSize switch
    {
        128 => Parse(Bins2048, 1).Select(b => (b.Ratio, b.Height * 2, b.Width * 2)).ToArray(),
        64 => Parse(Bins2048, 1),
        32 => Parse(Bins1024, 1),
        16 => Parse(Bins1024, 2),
        _ => throw new ArgumentException($"Resolution binning needs a Sana transformer of sample_size 128, 64, 32 or 16, this one has {sampleSize} (diffusers: Invalid sample size); turn it off."),
    };

    /// <summary>
    /// diffusers' <c>classify_height_width_bin</c>: the bin whose ratio (parsed as a number) is closest to
    /// <c>height / width</c>, the first of equally close ones.
    /// </summary>
    public static (int Height, int Width) Classify(int height, int width, IReadOnlyList<(string Ratio, int Height, int Width)> bins)
    {
        double ratio = (double)height / width;
        var best = bins[0];
        double bestDistance = Math.Abs(double.Parse(best.Ratio, System.Globalization.CultureInfo.InvariantCulture) - ratio);
        foreach (var bin in bins.Skip(1))
        {
            double distance = Math.Abs(double.Parse(bin.Ratio, System.Globalization.CultureInfo.InvariantCulture) - ratio);
            if (distance < bestDistance) (best, bestDistance) = (bin, distance);
        }
        return (best.Height, best.Width);
    }

    /// <summary>
    /// diffusers' <c>resize_and_crop_tensor</c>: images [N, C, H, W] scaled by max(height / H, width / W) (sizes truncated
    /// to integers) with bilinear interpolation (align_corners false), then center-cropped to
    /// <paramref name="height"/> x <paramref name="width"/>; unchanged when already that size.
    /// </summary>
    public static Tensor ResizeAndCrop(Tensor samples, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(samples);
        long origHeight = samples.shape[2], origWidth = samples.shape[3];
        if (origHeight == height && origWidth == width) return samples.alias();
        double scale = Math.Max((double)height / origHeight, (double)width / origWidth);
        long resizedWidth = (long)(origWidth * scale), resizedHeight = (long)(origHeight * scale);
        var resized = nn.functional.interpolate(samples, [resizedHeight, resizedWidth], mode: InterpolationMode.Bilinear, align_corners: false);
        long startX = (resizedWidth - width) / 2, startY = (resizedHeight - height) / 2;
        return resized.narrow(2, startY, height).narrow(3, startX, width);
    }

    private static (string Ratio, int Height, int Width)[] Parse(string table, int divisor) =>
        table.Split(' ').Select(entry =>
        {
            var parts = entry.Split(':', 'x');
            return (parts[0], int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) / divisor,
                int.Parse(parts[2], System.Globalization.CultureInfo.InvariantCulture) / divisor);
        }).ToArray();
}
