using System.Text.Json.Serialization;
using DiffusersSharp.IO;
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

    /// <summary>The file name of an image processor's config in a pipeline's <c>feature_extractor</c> folder.</summary>
    public const string ConfigFileName = "preprocessor_config.json";

    /// <summary>
    /// Reads a <c>feature_extractor</c> folder's <c>preprocessor_config.json</c> (FLUX.1-Redux's): its <c>size</c> (height =
    /// width) sets <see cref="Size"/>; the rest must be what this processor does (BICUBIC resample 3, rescale 1/255,
    /// normalize with mean and std 0.5), else the config is refused. <c>do_resize</c> and <c>do_convert_rgb</c> are not
    /// read: diffusers' Flux Redux pipeline passes both as true.
    /// </summary>
    /// <exception cref="FileNotFoundException">No preprocessor_config.json in <paramref name="folder"/>.</exception>
    /// <exception cref="InvalidDataException">The config is not valid JSON.</exception>
    /// <exception cref="NotSupportedException">The config asks for other processing than this class implements.</exception>
    public static SiglipImageProcessor FromPretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string path = Path.Combine(folder, ConfigFileName);
        var c = ConfigJson.Read<Config>(path);
        if (c.ImageProcessorType is { } type && type != nameof(SiglipImageProcessor))
            throw new NotSupportedException($"{path}: image_processor_type is {type}, not SiglipImageProcessor.");
        int height = c.Size?.Height ?? 224, width = c.Size?.Width ?? 224;
        if (height != width)
            throw new NotSupportedException($"{path}: size {height}x{width} is not square; SiglipImageProcessor here resizes to a square (the image encoder's image_size).");
        if (c.Resample != 3)
            throw new NotSupportedException($"{path}: resample {c.Resample} is not supported; only Pillow's BICUBIC (3), transformers' default, is.");
        if (!c.DoRescale || Math.Abs(c.RescaleFactor - 1.0 / 255) > 1e-12)
            throw new NotSupportedException($"{path}: only do_rescale with rescale_factor 1/255 is supported (got do_rescale {c.DoRescale}, rescale_factor {c.RescaleFactor}).");
        if (!c.DoNormalize || c.ImageMean is not { Length: 3 } mean || c.ImageStd is not { Length: 3 } std || mean.Any(m => m != 0.5) || std.Any(v => v != 0.5))
            throw new NotSupportedException($"{path}: only do_normalize with image_mean and image_std [0.5, 0.5, 0.5] (transformers' SigLIP defaults) is supported.");
        return new SiglipImageProcessor(height);
    }

    private sealed record Config
    {
        public string? ImageProcessorType { get; init; }
        public SizeConfig? Size { get; init; }
        public int Resample { get; init; } = 3;
        public bool DoRescale { get; init; } = true;
        public double RescaleFactor { get; init; } = 1.0 / 255;
        public bool DoNormalize { get; init; } = true;
        public double[]? ImageMean { get; init; } = [0.5, 0.5, 0.5];
        public double[]? ImageStd { get; init; } = [0.5, 0.5, 0.5];
    }

    private sealed record SizeConfig
    {
        [JsonPropertyName("height")] public int? Height { get; init; }
        [JsonPropertyName("width")] public int? Width { get; init; }
    }

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
