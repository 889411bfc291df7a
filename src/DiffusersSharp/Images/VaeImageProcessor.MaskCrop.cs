namespace DiffusersSharp.Images;

/// <summary>How <see cref="VaeImageProcessor.Resize"/> fits an image to a size (diffusers' <c>resize_mode</c>).</summary>
public enum ResizeMode
{
    /// <summary>Stretch to the size ("default").</summary>
    Default,
    /// <summary>Fit inside the size keeping the aspect ratio, centred, the empty bands filled by stretching the image's
    /// edge rows or columns ("fill").</summary>
    Fill,
    /// <summary>Cover the size keeping the aspect ratio, centred, the excess cut off ("crop").</summary>
    Crop,
}

/// <summary>A pixel rectangle [X1, X2) x [Y1, Y2), as Pillow's crop box (diffusers' <c>crops_coords</c>).</summary>
public readonly record struct CropRegion(int X1, int Y1, int X2, int Y2)
{
    /// <summary>X2 - X1.</summary>
    public int Width => X2 - X1;

    /// <summary>Y2 - Y1.</summary>
    public int Height => Y2 - Y1;
}

// Inpainting a masked region at full resolution (diffusers' padding_mask_crop): the crop region around the mask, the
// "fill" / "crop" resize modes, and pasting the result back over the original image.
public sealed partial class VaeImageProcessor
{
    /// <summary>
    /// diffusers' <c>get_crop_region</c>: the smallest rectangle holding every non-zero pixel of the mask (as L), grown by
    /// <paramref name="pad"/> pixels on each side within the image, then widened or heightened (centred, shifted back
    /// inside the image) to the aspect ratio of <paramref name="width"/> x <paramref name="height"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A mask without any non-zero pixel (there is no region to inpaint), a negative
    /// pad, or a size that is not positive.</exception>
    public static CropRegion GetCropRegion(ImageBuffer mask, int width, int height, int pad = 0)
    {
        ArgumentNullException.ThrowIfNull(mask);
        if (pad < 0) throw new ArgumentException($"padding_mask_crop must be >= 0, got {pad}.", nameof(pad));
        if (width < 1 || height < 1) throw new ArgumentException($"The processing size must be positive, got {width}x{height}.");
        var l = mask.ToGrayscale();
        int w = l.Width, h = l.Height;
        int left = w, right = -1, top = h, bottom = -1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                if (l.Pixels[y * w + x] == 0) continue;
                left = Math.Min(left, x);
                right = Math.Max(right, x);
                top = Math.Min(top, y);
                bottom = Math.Max(bottom, y);
            }
        if (right < 0)
            throw new ArgumentException("padding_mask_crop needs a mask with at least one non-black pixel: this mask marks nothing to inpaint.", nameof(mask));

        int x1 = Math.Max(left - pad, 0), y1 = Math.Max(top - pad, 0);
        int x2 = Math.Min(right + 1 + pad, w), y2 = Math.Min(bottom + 1 + pad, h);
        // Python float ratios and int() truncation, as diffusers computes them.
        double ratioCropRegion = (double)(x2 - x1) / (y2 - y1);
        double ratioProcessing = (double)width / height;
        if (ratioCropRegion > ratioProcessing) Grow(ref y1, ref y2, (x2 - x1) / ratioProcessing, h);
        else Grow(ref x1, ref x2, (y2 - y1) * ratioProcessing, w);
        return new CropRegion(x1, y1, x2, y2);
    }

    /// <summary>
    /// One side of get_crop_region's step 3: [a1, a2) grown to <paramref name="desired"/> (int() of the difference, split
    /// as diffusers splits it), shifted back inside [0, <paramref name="size"/>) and clipped there.
    /// </summary>
    private static void Grow(ref int a1, ref int a2, double desired, int size)
    {
        int diff = (int)(desired - (a2 - a1));
        int half = (int)Math.Floor(diff / 2.0); // Python's diff // 2
        a1 -= half;
        a2 += diff - half;
        if (a2 >= size)
        {
            int over = a2 - size;
            a2 -= over;
            a1 -= over;
        }
        if (a1 < 0)
        {
            a2 -= a1;
            a1 = 0;
        }
        if (a2 >= size) a2 = size;
    }

    /// <summary>
    /// diffusers' <c>resize</c> for an image: <see cref="ResizeMode.Default"/> is Pillow's resize with the configured
    /// filter; <see cref="ResizeMode.Fill"/> (<c>_resize_and_fill</c>) and <see cref="ResizeMode.Crop"/>
    /// (<c>_resize_and_crop</c>) keep the aspect ratio on a black RGB canvas, so they return RGB images.
    /// </summary>
    public ImageBuffer Resize(ImageBuffer image, int height, int width, ResizeMode mode = ResizeMode.Default)
    {
        ArgumentNullException.ThrowIfNull(image);
        return mode switch
        {
            ResizeMode.Default => image.Resize(width, height, Config.Resample),
            ResizeMode.Fill => ResizeAndFill(image, width, height),
            ResizeMode.Crop => ResizeAndCrop(image, width, height),
            _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown resize mode."),
        };
    }

    private ImageBuffer ResizeAndFill(ImageBuffer image, int width, int height)
    {
        double ratio = (double)width / height, srcRatio = (double)image.Width / image.Height;
        int srcW = ratio < srcRatio ? width : image.Width * height / image.Height;
        int srcH = ratio >= srcRatio ? height : image.Height * width / image.Width;
        var resized = image.Resize(srcW, srcH, Config.Resample);
        var result = new ImageBuffer(width, height, 3);
        PillowCompose.Paste(result, resized, width / 2 - srcW / 2, height / 2 - srcH / 2);
        if (ratio < srcRatio)
        {
            int fillHeight = height / 2 - srcH / 2;
            if (fillHeight > 0)
            {
                // Resizing an empty box at the top / bottom edge stretches the rows the filter weighs there. diffusers
                // passes no filter to these resizes: Pillow's default, BICUBIC, not the configured one.
                PillowCompose.Paste(result, PillowResample.Resize(resized, width, fillHeight, ResampleFilter.Bicubic, new ResampleBox(0, 0, width, 0)), 0, 0);
                PillowCompose.Paste(result, PillowResample.Resize(resized, width, fillHeight, ResampleFilter.Bicubic,
                    new ResampleBox(0, resized.Height, width, resized.Height)), 0, fillHeight + srcH);
            }
        }
        else if (ratio > srcRatio)
        {
            int fillWidth = width / 2 - srcW / 2;
            if (fillWidth > 0)
            {
                PillowCompose.Paste(result, PillowResample.Resize(resized, fillWidth, height, ResampleFilter.Bicubic, new ResampleBox(0, 0, 0, height)), 0, 0);
                PillowCompose.Paste(result, PillowResample.Resize(resized, fillWidth, height, ResampleFilter.Bicubic,
                    new ResampleBox(resized.Width, 0, resized.Width, height)), fillWidth + srcW, 0);
            }
        }
        return result;
    }

    private ImageBuffer ResizeAndCrop(ImageBuffer image, int width, int height)
    {
        double ratio = (double)width / height, srcRatio = (double)image.Width / image.Height;
        int srcW = ratio > srcRatio ? width : image.Width * height / image.Height;
        int srcH = ratio <= srcRatio ? height : image.Height * width / image.Width;
        var resized = image.Resize(srcW, srcH, Config.Resample);
        var result = new ImageBuffer(width, height, 3);
        PillowCompose.Paste(result, resized, width / 2 - srcW / 2, height / 2 - srcH / 2);
        return result;
    }

    /// <summary>
    /// diffusers' <c>apply_overlay</c>: the generated <paramref name="image"/> (resized in <see cref="ResizeMode.Crop"/>
    /// mode into <paramref name="crop"/> of a black canvas the size of <paramref name="initImage"/> when a crop region is
    /// given), with <paramref name="initImage"/> laid over it where <paramref name="mask"/> is black (through the inverted
    /// mask as alpha, in Pillow's premultiplied arithmetic). Returns an RGB image the size of <paramref name="initImage"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The mask and the initial image differ in size.</exception>
    public ImageBuffer ApplyOverlay(ImageBuffer mask, ImageBuffer initImage, ImageBuffer image, CropRegion? crop = null)
    {
        ArgumentNullException.ThrowIfNull(mask);
        ArgumentNullException.ThrowIfNull(initImage);
        ArgumentNullException.ThrowIfNull(image);
        int width = initImage.Width, height = initImage.Height;
        if (mask.Width != width || mask.Height != height)
            throw new ArgumentException($"The mask ({mask.Width}x{mask.Height}) must have the size of the image it is laid over ({width}x{height}).", nameof(mask));

        var initMasked = new ImageBuffer(width, height, 4);
        PillowCompose.Paste(initMasked, PillowCompose.Premultiply(PillowCompose.ToRgba(initImage)), PillowCompose.Invert(mask.ToGrayscale()));
        initMasked = PillowCompose.Unpremultiply(initMasked);

        if (crop is { } c)
        {
            var canvas = new ImageBuffer(width, height, 3);
            PillowCompose.Paste(canvas, Resize(image, c.Height, c.Width, ResizeMode.Crop), c.X1, c.Y1);
            image = canvas;
        }
        return PillowCompose.AlphaComposite(PillowCompose.ToRgba(image.ToRgb()), initMasked).ToRgb();
    }
}
