using static TorchSharp.torch;

namespace DiffusersSharp.Images;

/// <summary>
/// transformers' <c>SiglipImageProcessor</c> with its defaults (what google/siglip-so400m-patch14-384 ships and diffusers'
/// SD3 <c>load_ip_adapter</c> loads): RGB, resize to <see cref="Size"/> x <see cref="Size"/> (no aspect kept, no crop) with
/// Pillow's BICUBIC on the 8-bit image, rescale by 1/255 (in float64, stored as float32), normalize with mean 0.5 and std
/// 0.5 in float32, so values lie in [-1, 1].
/// </summary>
public sealed class SiglipImageProcessor
{
    private static readonly float[] Half = [0.5f, 0.5f, 0.5f];

    /// <summary>Resizes to <paramref name="size"/> x <paramref name="size"/> (the image encoder's image_size).</summary>
    public SiglipImageProcessor(int size = 384)
    {
        if (size <= 0) throw new ArgumentOutOfRangeException(nameof(size), size, "size must be positive.");
        Size = size;
    }

    /// <summary>Side of the resized image.</summary>
    public int Size { get; }

    /// <summary>The resized 8-bit RGB image (before rescale and normalize); an image of that size already is kept as it is.</summary>
    public ImageBuffer Resize(ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var rgb = image.Channels == 3 ? image : image.ToRgb();
        return rgb.Width == Size && rgb.Height == Size ? rgb : rgb.Resize(Size, Size, ResampleFilter.Bicubic);
    }

    /// <summary>The pixel values [images, 3, size, size] float32 of <paramref name="images"/>.</summary>
    public Tensor Preprocess(IReadOnlyList<ImageBuffer> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("No images to preprocess.", nameof(images));
        return CLIPImageProcessor.PixelValues(images.Select(Resize).ToArray(), Half, Half);
    }
}
