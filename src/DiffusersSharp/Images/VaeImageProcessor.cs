using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Images;

/// <summary>Options of <see cref="VaeImageProcessor"/>; defaults are diffusers' constructor defaults.</summary>
public sealed record VaeImageProcessorConfig
{
    /// <summary>Resize inputs to the requested size (rounded down to a multiple of <see cref="VaeScaleFactor"/>).</summary>
    public bool DoResize { get; init; } = true;

    /// <summary>The VAE's spatial downscale factor (8 for SD3).</summary>
    public int VaeScaleFactor { get; init; } = 8;

    /// <summary>Channel count of latents: a tensor input with this many channels is returned untouched (16 for SD3).</summary>
    public int VaeLatentChannels { get; init; } = 4;

    /// <summary>Pillow filter used to resize images (diffusers' "lanczos").</summary>
    public ResampleFilter Resample { get; init; } = ResampleFilter.Lanczos;

    /// <summary>Map [0, 1] to [-1, 1] in preprocessing and back in postprocessing.</summary>
    public bool DoNormalize { get; init; } = true;

    /// <summary>Set values &lt; 0.5 to 0 and the others to 1 (masks).</summary>
    public bool DoBinarize { get; init; }

    /// <summary>Convert images to RGB (Pillow <c>convert("RGB")</c>) after resizing.</summary>
    public bool DoConvertRgb { get; init; }

    /// <summary>Convert images to grayscale (Pillow <c>convert("L")</c>) after resizing.</summary>
    public bool DoConvertGrayscale { get; init; }
}

/// <summary>
/// diffusers' <c>VaeImageProcessor</c>: images to VAE input tensors (resize with Pillow's filter, /255, 2x-1,
/// optional binarize) and VAE output tensors back to [0, 1] arrays and 8-bit images.
/// </summary>
public sealed partial class VaeImageProcessor
{
    /// <summary>Creates a processor.</summary>
    /// <exception cref="ArgumentException">Both RGB and grayscale conversion are set, or the scale factor is not positive.</exception>
    public VaeImageProcessor(VaeImageProcessorConfig? config = null)
    {
        Config = config ?? new VaeImageProcessorConfig();
        if (Config.DoConvertRgb && Config.DoConvertGrayscale)
            throw new ArgumentException("do_convert_rgb and do_convert_grayscale cannot both be set.", nameof(config));
        if (Config.VaeScaleFactor < 1)
            throw new ArgumentException($"vae_scale_factor must be positive, got {Config.VaeScaleFactor}.", nameof(config));
    }

    /// <summary>The options.</summary>
    public VaeImageProcessorConfig Config { get; }

    /// <summary>
    /// The SD3 inpainting pipeline's <c>mask_processor</c>: no normalization, binarized, converted to grayscale.
    /// </summary>
    public static VaeImageProcessor CreateMaskProcessor(int vaeScaleFactor = 8, int vaeLatentChannels = 16) => new(new VaeImageProcessorConfig
    {
        VaeScaleFactor = vaeScaleFactor,
        VaeLatentChannels = vaeLatentChannels,
        DoNormalize = false,
        DoBinarize = true,
        DoConvertGrayscale = true,
    });

    /// <summary>
    /// The target size: <paramref name="height"/> / <paramref name="width"/>, or the image's own, rounded down to a
    /// multiple of the VAE scale factor (<c>get_default_height_width</c>).
    /// </summary>
    public (int Height, int Width) GetDefaultHeightWidth(int imageHeight, int imageWidth, int? height = null, int? width = null)
    {
        int h = height ?? imageHeight, w = width ?? imageWidth;
        int f = Config.VaeScaleFactor;
        return (h - h % f, w - w % f);
    }

    /// <summary>Preprocesses one image; see <see cref="Preprocess(IReadOnlyList{ImageBuffer}, int?, int?, ResizeMode, CropRegion?)"/>.</summary>
    public Tensor Preprocess(ImageBuffer image, int? height = null, int? width = null, ResizeMode resizeMode = ResizeMode.Default, CropRegion? crop = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Preprocess(new[] { image }, height, width, resizeMode, crop);
    }

    /// <summary>
    /// Images to a float32 CPU tensor [N, C, H, W]: cropped to <paramref name="crop"/> if given (Pillow's crop), resized
    /// to (width, height) by <see cref="Resize"/> in <paramref name="resizeMode"/> when <c>do_resize</c> (a same-size
    /// default resize is a copy), converted to RGB / L if configured, divided by 255 (float32), then <c>2x - 1</c> if
    /// <c>do_normalize</c> and binarized at 0.5 if <c>do_binarize</c>.
    /// </summary>
    /// <exception cref="ArgumentException">No images, a target size under one VAE block, or images of different sizes or channel counts after resizing.</exception>
    public Tensor Preprocess(IReadOnlyList<ImageBuffer> images, int? height = null, int? width = null, ResizeMode resizeMode = ResizeMode.Default, CropRegion? crop = null)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("No images to preprocess.", nameof(images));
        if (images.Any(i => i is null)) throw new ArgumentException("An image is null.", nameof(images));
        var cropped = crop is { } box ? images.Select(i => PillowCompose.Crop(i, box.X1, box.Y1, box.X2, box.Y2)).ToArray() : images;
        var prepared = new ImageBuffer[cropped.Count];
        for (int i = 0; i < cropped.Count; i++)
        {
            var img = cropped[i];
            if (Config.DoResize)
            {
                var (h, w) = GetDefaultHeightWidth(cropped[0].Height, cropped[0].Width, height, width);
                if (h < 1 || w < 1)
                    throw new ArgumentException($"Target size {width ?? cropped[0].Width}x{height ?? cropped[0].Height} is smaller than one VAE block ({Config.VaeScaleFactor} pixels).");
                img = Resize(img, h, w, resizeMode);
            }
            if (Config.DoConvertRgb) img = img.ToRgb();
            else if (Config.DoConvertGrayscale) img = img.ToGrayscale();
            prepared[i] = img;
        }
        var first = prepared[0];
        if (prepared.Any(p => p.Width != first.Width || p.Height != first.Height || p.Channels != first.Channels))
            throw new ArgumentException("All images must have the same size and channel count after resizing (set height and width, or convert them).", nameof(images));

        int n = prepared.Length, c = first.Channels, hh = first.Height, ww = first.Width, plane = hh * ww;
        var data = new float[n * c * plane];
        for (int b = 0; b < n; b++)
        {
            var px = prepared[b].Pixels;
            for (int p = 0; p < plane; p++)
                for (int ch = 0; ch < c; ch++)
                    data[(b * c + ch) * plane + p] = Finish(px[p * c + ch] / 255f);
        }
        return tensor(data, new long[] { n, c, hh, ww }, ScalarType.Float32);
    }

    /// <summary>
    /// Preprocesses a float tensor [N, C, H, W] (or [N, H, W] for grayscale) in [0, 1]: returned as-is if it has
    /// <c>vae_latent_channels</c> channels (ready latents); else resized with nearest interpolation, normalized (unless
    /// it already has negative values, which diffusers takes as [-1, 1]) and binarized as configured.
    /// </summary>
    public Tensor Preprocess(Tensor image, int? height = null, int? width = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        using var scope = NewDisposeScope();
        var x = image;
        if (Config.DoConvertGrayscale && x.dim() == 3) x = x.unsqueeze(1);
        if (x.dim() != 4) throw new ArgumentException($"Expected an image tensor [N, C, H, W], got shape [{string.Join(",", x.shape)}].", nameof(image));
        if (!x.is_floating_point()) throw new ArgumentException($"Expected a floating-point image tensor in [0, 1], got {x.dtype}.", nameof(image));
        if (x.shape[1] == Config.VaeLatentChannels) return x.alias().MoveToOuterDisposeScope();
        if (Config.DoResize)
        {
            var (h, w) = GetDefaultHeightWidth((int)x.shape[2], (int)x.shape[3], height, width);
            x = nn.functional.interpolate(x, size: new long[] { h, w }, mode: InterpolationMode.Nearest);
        }
        if (Config.DoNormalize && x.min().item<float>() >= 0) x = 2.0 * x - 1.0;
        if (Config.DoBinarize) x = where(x < 0.5, zeros_like(x), ones_like(x));
        return (ReferenceEquals(x, image) ? x.clone() : x).MoveToOuterDisposeScope();
    }

    private float Finish(float v)
    {
        if (Config.DoNormalize) v = 2f * v - 1f; // two float32 roundings, as torch's 2.0 * x - 1.0
        if (Config.DoBinarize) v = v < 0.5f ? 0f : 1f;
        return v;
    }

    /// <summary>
    /// VAE output [N, C, H, W] to a float32 CPU tensor [N, H, W, C] in [0, 1] (diffusers' <c>output_type="np"</c>):
    /// <c>(x / 2 + 0.5).clamp(0, 1)</c> in the input's dtype when <paramref name="denormalize"/> (default:
    /// <c>do_normalize</c>), then permuted and cast to float32.
    /// </summary>
    public Tensor Postprocess(Tensor image, bool? denormalize = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.dim() != 4) throw new ArgumentException($"Expected an image tensor [N, C, H, W], got shape [{string.Join(",", image.shape)}].", nameof(image));
        using var scope = NewDisposeScope();
        var x = image.detach();
        if (denormalize ?? Config.DoNormalize) x = (x / 2 + 0.5).clamp(0, 1);
        var result = x.cpu().permute(0, 2, 3, 1).to(ScalarType.Float32).contiguous();
        if (ReferenceEquals(result, image)) result = result.clone();
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// VAE output [N, C, H, W] to 8-bit images (diffusers' <c>output_type="pil"</c>): <see cref="Postprocess"/>, then
    /// <c>(x * 255).round()</c> in float32 (half to even, as numpy) cast to uint8. One channel gives L images.
    /// </summary>
    public ImageBuffer[] PostprocessToImages(Tensor image, bool? denormalize = null)
    {
        using var nhwc = Postprocess(image, denormalize);
        int n = (int)nhwc.shape[0], h = (int)nhwc.shape[1], w = (int)nhwc.shape[2], c = (int)nhwc.shape[3];
        if (c is not (1 or 3 or 4)) throw new ArgumentException($"Cannot make images with {c} channels.", nameof(image));
        var values = nhwc.data<float>().ToArray();
        var result = new ImageBuffer[n];
        int size = h * w * c;
        for (int b = 0; b < n; b++)
        {
            var px = new byte[size];
            for (int i = 0; i < size; i++) px[i] = ToByte(values[b * size + i]);
            result[b] = new ImageBuffer(w, h, c, px);
        }
        return result;
    }

    // numpy: (x * 255).round().astype(uint8). Values are in [0, 255] after the clamp; without denormalization they
    // may not be, and numpy's cast is then platform-dependent, so they are clamped.
    private static byte ToByte(float v)
    {
        float r = MathF.Round(v * 255f, MidpointRounding.ToEven);
        return r <= 0f || float.IsNaN(r) ? (byte)0 : r >= 255f ? (byte)255 : (byte)r;
    }

    /// <summary>diffusers' <c>blur</c>: Pillow <c>GaussianBlur(blur_factor)</c>, bit for bit.</summary>
    public static ImageBuffer Blur(ImageBuffer image, float blurFactor = 4) => PillowBlur.GaussianBlur(image, blurFactor, blurFactor);

    /// <summary>
    /// <c>F.interpolate(mask, size=(height, width))</c> (mode nearest), as the inpaint pipeline's
    /// <c>prepare_mask_latents</c> uses to bring the mask to latent size.
    /// </summary>
    public static Tensor ResizeMaskNearest(Tensor mask, int height, int width)
    {
        ArgumentNullException.ThrowIfNull(mask);
        if (mask.dim() != 4) throw new ArgumentException($"Expected a mask tensor [N, 1, H, W], got shape [{string.Join(",", mask.shape)}].", nameof(mask));
        if (height < 1 || width < 1) throw new ArgumentOutOfRangeException(nameof(height), $"Target size {width}x{height} must be positive.");
        return nn.functional.interpolate(mask, size: new long[] { height, width }, mode: InterpolationMode.Nearest);
    }
}
