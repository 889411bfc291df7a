using System.Runtime.InteropServices;
using DiffusersSharp.IO;
using SkiaSharp;

namespace DiffusersSharp.Images;

/// <summary>
/// Reads and writes PNG / JPEG (and whatever else SkiaSharp decodes: WebP, GIF, BMP) as <see cref="ImageBuffer"/>.
/// Decoding does no colour management and no premultiplication, as Pillow; <see cref="LoadRgb"/> is diffusers'
/// <c>load_image</c> (EXIF orientation applied, then <c>convert("RGB")</c>, which drops alpha without compositing).
/// Writes are atomic (<see cref="AtomicFile"/>).
/// </summary>
public static class ImageFile
{
    /// <summary>
    /// Decodes an image as stored: 1 channel for grayscale, 3 for opaque colour, 4 when it has alpha; EXIF orientation
    /// is applied when <paramref name="applyExifOrientation"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a readable image, or is truncated or corrupt.</exception>
    public static ImageBuffer Load(string path, bool applyExifOrientation = true)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Image file not found: {path}", path);
        return Decode(File.ReadAllBytes(path), path, applyExifOrientation);
    }

    /// <summary>diffusers' <c>load_image</c>: EXIF-transposed and converted to RGB (alpha dropped, L replicated).</summary>
    /// <inheritdoc cref="Load" path="/exception"/>
    public static ImageBuffer LoadRgb(string path) => Load(path).ToRgb();

    /// <summary>Loads an image and converts it to grayscale (Pillow <c>convert("L")</c>), e.g. an inpainting mask.</summary>
    /// <inheritdoc cref="Load" path="/exception"/>
    public static ImageBuffer LoadGrayscale(string path) => Load(path).ToGrayscale();

    /// <summary>Decodes encoded image bytes; <paramref name="source"/> names them in errors.</summary>
    /// <exception cref="InvalidDataException">The bytes are not a readable image, or are truncated or corrupt.</exception>
    public static ImageBuffer Decode(byte[] encoded, string source = "image", bool applyExifOrientation = true)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        if (encoded.Length == 0) throw new InvalidDataException($"{source}: the file is empty, not an image.");
        using var stream = new SKMemoryStream(encoded);
        using var codec = SKCodec.Create(stream, out var created);
        if (codec is null)
            throw new InvalidDataException($"{source}: not a readable image (PNG, JPEG, WebP, GIF or BMP expected; decoder said {created}).");
        var info = codec.Info;
        if (info.Width < 1 || info.Height < 1) throw new InvalidDataException($"{source}: image has no pixels ({info.Width}x{info.Height}).");
        bool gray = info.ColorType == SKColorType.Gray8;
        bool alpha = !gray && info.AlphaType != SKAlphaType.Opaque;
        // No colour space on the target: Skia then converts nothing, as Pillow ignores ICC profiles.
        var target = new SKImageInfo(info.Width, info.Height, gray ? SKColorType.Gray8 : SKColorType.Rgba8888,
            gray ? SKAlphaType.Opaque : SKAlphaType.Unpremul);
        var raw = new byte[target.BytesSize];
        var handle = GCHandle.Alloc(raw, GCHandleType.Pinned);
        SKCodecResult result;
        try { result = codec.GetPixels(target, handle.AddrOfPinnedObject()); }
        finally { handle.Free(); }
        if (result != SKCodecResult.Success)
            throw new InvalidDataException($"{source}: the image data is {(result == SKCodecResult.IncompleteInput ? "truncated" : "corrupt")} ({result}).");

        ImageBuffer image;
        if (gray) image = new ImageBuffer(info.Width, info.Height, 1, raw);
        else if (alpha) image = new ImageBuffer(info.Width, info.Height, 4, raw);
        else
        {
            var rgb = new byte[info.Width * info.Height * 3];
            for (int i = 0, j = 0; i < rgb.Length; i += 3, j += 4)
            {
                rgb[i] = raw[j];
                rgb[i + 1] = raw[j + 1];
                rgb[i + 2] = raw[j + 2];
            }
            image = new ImageBuffer(info.Width, info.Height, 3, rgb);
        }
        return applyExifOrientation ? Orient(image, (int)codec.EncodedOrigin) : image;
    }

    /// <summary>Encodes as PNG (L, RGB or RGBA as the image is) with optional text chunks (see <see cref="PngText"/>).</summary>
    public static byte[] EncodePng(ImageBuffer image, IReadOnlyDictionary<string, string>? text = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        byte[] png = Encode(image, SKEncodedImageFormat.Png, 100);
        return text is { Count: > 0 } ? PngText.Add(png, text) : png;
    }

    /// <summary>Encodes as JPEG (alpha dropped) with the given quality (1-100).</summary>
    public static byte[] EncodeJpeg(ImageBuffer image, int quality = 95)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (quality is < 1 or > 100) throw new ArgumentOutOfRangeException(nameof(quality), quality, "JPEG quality must be 1-100.");
        return Encode(image.Channels == 4 ? image.ToRgb() : image, SKEncodedImageFormat.Jpeg, quality);
    }

    /// <summary>Writes a PNG atomically, with <paramref name="text"/> as text chunks (e.g. <c>{"parameters": ...}</c>).</summary>
    public static void SavePng(ImageBuffer image, string path, IReadOnlyDictionary<string, string>? text = null) =>
        AtomicFile.WriteAllBytes(path, EncodePng(image, text));

    /// <summary>Writes a JPEG atomically.</summary>
    public static void SaveJpeg(ImageBuffer image, string path, int quality = 95) =>
        AtomicFile.WriteAllBytes(path, EncodeJpeg(image, quality));

    /// <summary>Writes PNG or JPEG by the extension of <paramref name="path"/> (.png, .jpg, .jpeg); text goes only into PNGs.</summary>
    /// <exception cref="ArgumentException">Another extension.</exception>
    public static void Save(ImageBuffer image, string path, IReadOnlyDictionary<string, string>? text = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        switch (Path.GetExtension(path).ToLowerInvariant())
        {
            case ".png": SavePng(image, path, text); break;
            case ".jpg" or ".jpeg": SaveJpeg(image, path); break;
            default: throw new ArgumentException($"Cannot tell the image format of '{path}': use a .png, .jpg or .jpeg file name.", nameof(path));
        }
    }

    /// <summary>Reads the PNG text chunks of a file (empty for non-PNG files).</summary>
    /// <exception cref="InvalidDataException">The PNG is malformed.</exception>
    public static Dictionary<string, string> ReadPngText(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 8 || bytes[0] != 137 || bytes[1] != (byte)'P') return new Dictionary<string, string>();
        try { return PngText.Read(bytes); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }

    private static byte[] Encode(ImageBuffer image, SKEncodedImageFormat format, int quality)
    {
        byte[] px;
        SKImageInfo info;
        if (image.Channels == 1)
        {
            px = image.Pixels;
            info = new SKImageInfo(image.Width, image.Height, SKColorType.Gray8, SKAlphaType.Opaque);
        }
        else
        {
            px = new byte[image.Width * image.Height * 4];
            var src = image.Pixels;
            for (int i = 0, j = 0; j < px.Length; i += image.Channels, j += 4)
            {
                px[j] = src[i];
                px[j + 1] = src[i + 1];
                px[j + 2] = src[i + 2];
                px[j + 3] = image.Channels == 4 ? src[i + 3] : (byte)255;
            }
            info = new SKImageInfo(image.Width, image.Height, SKColorType.Rgba8888, image.Channels == 4 ? SKAlphaType.Unpremul : SKAlphaType.Opaque);
        }
        var handle = GCHandle.Alloc(px, GCHandleType.Pinned);
        try
        {
            using var pixmap = new SKPixmap(info, handle.AddrOfPinnedObject(), info.RowBytes);
            using var data = pixmap.Encode(format, quality)
                ?? throw new InvalidOperationException($"SkiaSharp could not encode a {image.Width}x{image.Height}x{image.Channels} image as {format}.");
            return data.ToArray();
        }
        finally { handle.Free(); }
    }

    /// <summary>Pillow's <c>ImageOps.exif_transpose</c> for EXIF orientations 2-8.</summary>
    internal static ImageBuffer Orient(ImageBuffer image, int orientation)
    {
        if (orientation is < 2 or > 8) return image;
        int w = image.Width, h = image.Height, c = image.Channels;
        bool swap = orientation >= 5;
        int ow = swap ? h : w, oh = swap ? w : h;
        var o = new byte[image.Pixels.Length];
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
            {
                var (sx, sy) = orientation switch
                {
                    2 => (w - 1 - x, y),
                    3 => (w - 1 - x, h - 1 - y),
                    4 => (x, h - 1 - y),
                    5 => (y, x),
                    6 => (y, h - 1 - x),
                    7 => (w - 1 - y, h - 1 - x),
                    _ => (w - 1 - y, x),
                };
                Buffer.BlockCopy(image.Pixels, (sy * w + sx) * c, o, (y * ow + x) * c, c);
            }
        return new ImageBuffer(ow, oh, c, o);
    }
}
