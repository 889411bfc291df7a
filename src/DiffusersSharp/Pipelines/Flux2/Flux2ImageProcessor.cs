using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// What diffusers' <c>Flux2ImageProcessor</c> adds to the VAE image processor for FLUX.2's reference images, and how
/// <c>Flux2KleinPipeline</c> uses it: each image is checked (<c>check_image_input</c>), scaled down to 1024 × 1024 pixels
/// of area when larger (<c>_resize_to_target_area</c>, LANCZOS), floored to a multiple of twice the VAE scale factor and
/// centre-cropped there (the processor's <c>resize_mode="crop"</c>, which FLUX.2 overrides to crop without resizing).
/// </summary>
public static class Flux2ImageProcessor
{
    /// <summary>The pipeline's limit on a reference image's area in pixels (larger ones are scaled down to it).</summary>
    public const int MaxReferenceArea = 1024 * 1024;

    /// <summary>diffusers' <c>check_image_input</c> defaults: the shortest side allowed.</summary>
    public const int MinSideLength = 64;

    /// <summary>diffusers' <c>check_image_input</c> defaults: the most elongated aspect ratio allowed.</summary>
    public const int MaxAspectRatio = 8;

    /// <summary>diffusers' <c>check_image_input</c>: both sides at least 64 pixels and an aspect ratio up to 8.</summary>
    /// <exception cref="ArgumentException">The image is too small or too elongated (named by <paramref name="name"/>).</exception>
    public static void CheckImageInput(ImageBuffer image, string name = "image")
    {
        ArgumentNullException.ThrowIfNull(image);
        int width = image.Width, height = image.Height;
        if (width < MinSideLength || height < MinSideLength)
            throw new ArgumentException($"{name} is too small: {width}x{height}. Both sides must be at least {MinSideLength} pixels.");
        double aspect = Math.Max((double)width / height, (double)height / width);
        if (aspect > MaxAspectRatio)
            throw new ArgumentException($"{name}'s aspect ratio is too extreme: {width}x{height} ({aspect:0.0}:1); at most {MaxAspectRatio}:1.");
    }

    /// <summary>The size <c>_resize_to_target_area</c> gives: <c>int(w · s) × int(h · s)</c>, <c>s = sqrt(area / (w · h))</c>.</summary>
    public static (int Width, int Height) TargetAreaSize(int width, int height, int targetArea)
    {
        double scale = Math.Sqrt((double)targetArea / ((double)width * height));
        return ((int)(width * scale), (int)(height * scale));
    }

    /// <summary>diffusers' <c>_resize_to_target_area</c>: the image scaled to about <paramref name="targetArea"/> pixels,
    /// keeping its aspect ratio (Pillow's LANCZOS resize).</summary>
    public static ImageBuffer ResizeToTargetArea(ImageBuffer image, int targetArea)
    {
        ArgumentNullException.ThrowIfNull(image);
        var (width, height) = TargetAreaSize(image.Width, image.Height, targetArea);
        return image.Resize(width, height, ResampleFilter.Lanczos);
    }

    /// <summary>The size a reference image is encoded at: after the area limit, floored to multiples of
    /// <paramref name="multiple"/>.</summary>
    public static (int Width, int Height) ReferenceSize(ImageBuffer image, int multiple)
    {
        ArgumentNullException.ThrowIfNull(image);
        var (width, height) = (long)image.Width * image.Height > MaxReferenceArea
            ? TargetAreaSize(image.Width, image.Height, MaxReferenceArea) : (image.Width, image.Height);
        return (width / multiple * multiple, height / multiple * multiple);
    }

    /// <summary>
    /// A reference image as the pipeline encodes it: scaled down past <see cref="MaxReferenceArea"/>, centre-cropped to
    /// <see cref="ReferenceSize"/> and preprocessed by <paramref name="processor"/> (RGB, [-1, 1]): [1, 3, H, W] float32.
    /// </summary>
    public static Tensor PreprocessReference(ImageBuffer image, VaeImageProcessor processor, int multiple)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(processor);
        var (width, height) = ReferenceSize(image, multiple);
        if ((long)image.Width * image.Height > MaxReferenceArea) image = ResizeToTargetArea(image, MaxReferenceArea);
        // FLUX.2's _resize_and_crop: a centre crop to the size, no resampling.
        int left = (image.Width - width) / 2, top = (image.Height - height) / 2;
        return processor.Preprocess(image, height, width, crop: new CropRegion(left, top, left + width, top + height));
    }
}
