using static TorchSharp.torch;

namespace DiffusersSharp.Images;

/// <summary>
/// transformers' <c>CLIPImageProcessor</c> with the defaults diffusers' <c>load_ip_adapter</c> builds it with (size and
/// crop size = the image encoder's image_size): RGB, resize so the shortest side is <see cref="Size"/> (the other side
/// <c>int(size x long / short)</c>) with Pillow's BICUBIC, center crop <see cref="CropSize"/> (top / left offsets
/// rounded down), rescale by 1/255 (in float64, stored as float32), normalize with CLIP's mean and std in float32.
/// </summary>
public sealed class CLIPImageProcessor
{
    private static readonly float[] Mean = [0.48145466f, 0.4578275f, 0.40821073f];
    private static readonly float[] Std = [0.26862954f, 0.26130258f, 0.27577711f];

    /// <summary>Uses <paramref name="size"/> for the shortest side and the crop.</summary>
    public CLIPImageProcessor(int size = 224, int? cropSize = null)
    {
        if (size <= 0) throw new ArgumentOutOfRangeException(nameof(size), size, "size must be positive.");
        Size = size;
        CropSize = cropSize ?? size;
        if (CropSize <= 0 || CropSize > Size) throw new ArgumentOutOfRangeException(nameof(cropSize), cropSize, "crop size must be positive and at most size.");
    }

    /// <summary>Shortest side after the resize.</summary>
    public int Size { get; }

    /// <summary>Side of the center crop.</summary>
    public int CropSize { get; }

    /// <summary>The resized and cropped 8-bit image (before rescale and normalize).</summary>
    public ImageBuffer ResizeAndCrop(ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var rgb = image.Channels == 3 ? image : image.ToRgb();
        int w = rgb.Width, h = rgb.Height;
        int shortSide = Math.Min(w, h), longSide = Math.Max(w, h);
        var resized = rgb;
        if (shortSide != Size)
        {
            int newLong = (int)((double)Size * longSide / shortSide);
            (int nw, int nh) = w <= h ? (Size, newLong) : (newLong, Size);
            resized = rgb.Resize(nw, nh, ResampleFilter.Bicubic);
        }
        int top = (resized.Height - CropSize) / 2, left = (resized.Width - CropSize) / 2;
        var crop = new byte[CropSize * CropSize * 3];
        for (int y = 0; y < CropSize; y++)
            Array.Copy(resized.Pixels, ((top + y) * resized.Width + left) * 3, crop, y * CropSize * 3, CropSize * 3);
        return new ImageBuffer(CropSize, CropSize, 3, crop);
    }

    /// <summary>The pixel values [images, 3, crop, crop] float32 of <paramref name="images"/>.</summary>
    public Tensor Preprocess(IReadOnlyList<ImageBuffer> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("No images to preprocess.", nameof(images));
        return PixelValues(images.Select(ResizeAndCrop).ToArray(), Mean, Std);
    }

    /// <summary>
    /// transformers' <c>rescale</c> then <c>normalize</c> of 8-bit RGB images of one size: each value times 1/255 in
    /// float64, stored as float32, then <c>(x - mean) / std</c> in float32; returns [images, 3, H, W].
    /// </summary>
    internal static Tensor PixelValues(IReadOnlyList<ImageBuffer> sized, float[] mean, float[] std)
    {
        int width = sized[0].Width, height = sized[0].Height, n = width * height;
        var values = new float[sized.Count * 3 * n];
        for (int i = 0; i < sized.Count; i++)
        {
            var image = sized[i];
            if (image.Width != width || image.Height != height || image.Channels != 3)
                throw new ArgumentException("The images to normalize must be RGB and of one size.", nameof(sized));
            for (int p = 0; p < n; p++)
                for (int c = 0; c < 3; c++)
                {
                    float rescaled = (float)(image.Pixels[p * 3 + c] * (1 / 255.0));
                    values[(i * 3 + c) * n + p] = (rescaled - mean[c]) / std[c];
                }
        }
        return tensor(values, [sized.Count, 3, height, width]);
    }
}
