using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// An image input of a pipeline, as diffusers' <c>PipelineImageInput</c>: an 8-bit image (resized with Pillow's LANCZOS
/// to the requested size) or a tensor NCHW with values in [0, 1] (a tensor with the VAE's latent channel count is taken
/// as latents, unscaled). The caller keeps ownership of a tensor.
/// </summary>
public sealed class PipelineImage
{
    /// <summary>The 8-bit image, when given as one.</summary>
    public ImageBuffer? Image { get; }

    /// <summary>The tensor, when given as one.</summary>
    public Tensor? Tensor { get; }

    private PipelineImage(ImageBuffer? image, Tensor? tensor)
    {
        Image = image;
        Tensor = tensor;
    }

    /// <summary>An 8-bit image input.</summary>
    public static implicit operator PipelineImage(ImageBuffer image) => new(image ?? throw new ArgumentNullException(nameof(image)), null);

    /// <summary>A tensor input: NCHW in [0, 1], or latents.</summary>
    public static PipelineImage FromTensor(Tensor tensor) => new(null, tensor ?? throw new ArgumentNullException(nameof(tensor)));

    /// <summary>
    /// The processor's tensor for this input at <paramref name="height"/> x <paramref name="width"/>; with
    /// <paramref name="crop"/> (images only, checked by <see cref="MaskCrop.For"/>) cropped to its region and resized in
    /// <see cref="ResizeMode.Fill"/> mode, as diffusers preprocesses with <c>crops_coords</c>.
    /// </summary>
    internal Tensor Preprocess(VaeImageProcessor processor, int height, int width, MaskCrop? crop = null) =>
        Image is { } pixels
            ? crop is null ? processor.Preprocess(pixels, height, width) : processor.Preprocess(pixels, height, width, ResizeMode.Fill, crop.Region)
            : processor.Preprocess(Tensor!, height, width);

    /// <summary>Reads a PNG or JPEG file.</summary>
    public static PipelineImage Load(string path) => ImageFile.LoadRgb(path);
}
