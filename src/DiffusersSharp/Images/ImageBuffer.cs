namespace DiffusersSharp.Images;

/// <summary>
/// An 8-bit image: <see cref="Height"/> rows of <see cref="Width"/> pixels of <see cref="Channels"/> bytes each
/// (HWC, row-major), as Pillow's "L" (1 channel), "RGB" (3) and "RGBA" (4) modes and numpy's <c>np.array(image)</c>.
/// </summary>
public sealed class ImageBuffer
{
    /// <summary>Wraps <paramref name="pixels"/> (not copied) as an image.</summary>
    /// <exception cref="ArgumentException">Non-positive size, channels other than 1, 3 or 4, or a pixel array of the wrong length.</exception>
    public ImageBuffer(int width, int height, int channels, byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        if (width < 1 || height < 1)
            throw new ArgumentException($"Image size must be positive, got {width}x{height}.");
        if (channels is not (1 or 3 or 4))
            throw new ArgumentException($"Channels must be 1 (L), 3 (RGB) or 4 (RGBA), got {channels}.", nameof(channels));
        if (pixels.LongLength != (long)width * height * channels)
            throw new ArgumentException($"{pixels.LongLength} bytes for a {width}x{height}x{channels} image; expected {(long)width * height * channels}.", nameof(pixels));
        Width = width;
        Height = height;
        Channels = channels;
        Pixels = pixels;
    }

    /// <summary>A black image.</summary>
    public ImageBuffer(int width, int height, int channels)
        : this(width, height, channels, new byte[checked(width * height * channels)]) { }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }

    /// <summary>Height in pixels.</summary>
    public int Height { get; }

    /// <summary>Bytes per pixel: 1 (L), 3 (RGB) or 4 (RGBA).</summary>
    public int Channels { get; }

    /// <summary>The pixels, HWC, row-major.</summary>
    public byte[] Pixels { get; }

    /// <summary>A deep copy.</summary>
    public ImageBuffer Clone() => new(Width, Height, Channels, (byte[])Pixels.Clone());

    /// <summary>
    /// Pillow's <c>convert("L")</c>: ITU-R 601-2 luma in 16-bit fixed point,
    /// <c>(R*19595 + G*38470 + B*7471 + 0x8000) &gt;&gt; 16</c>; alpha is dropped. Returns a copy for an L image.
    /// </summary>
    public ImageBuffer ToGrayscale()
    {
        if (Channels == 1) return Clone();
        var o = new byte[Width * Height];
        for (int i = 0, p = 0; i < o.Length; i++, p += Channels)
            o[i] = (byte)((Pixels[p] * 19595 + Pixels[p + 1] * 38470 + Pixels[p + 2] * 7471 + 0x8000) >> 16);
        return new ImageBuffer(Width, Height, 1, o);
    }

    /// <summary>Pillow's <c>convert("RGB")</c>: L is replicated, alpha is dropped (not composited). Returns a copy for RGB.</summary>
    public ImageBuffer ToRgb()
    {
        if (Channels == 3) return Clone();
        var o = new byte[Width * Height * 3];
        for (int i = 0, p = 0; i < Width * Height; i++, p += Channels)
        {
            o[3 * i] = Pixels[p];
            o[3 * i + 1] = Pixels[Channels == 1 ? p : p + 1];
            o[3 * i + 2] = Pixels[Channels == 1 ? p : p + 2];
        }
        return new ImageBuffer(Width, Height, 3, o);
    }

    /// <summary>Pillow's <c>Image.resize((width, height), filter)</c> (reducing_gap None), bit for bit; see <see cref="PillowResample"/>.</summary>
    public ImageBuffer Resize(int width, int height, ResampleFilter filter = ResampleFilter.Bicubic) =>
        PillowResample.Resize(this, width, height, filter);

    /// <summary>Pillow's <c>image.filter(ImageFilter.GaussianBlur(radius))</c>, bit for bit; see <see cref="PillowBlur"/>.</summary>
    public ImageBuffer GaussianBlur(float radius) => PillowBlur.GaussianBlur(this, radius, radius);
}
