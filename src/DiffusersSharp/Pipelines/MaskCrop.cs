using DiffusersSharp.Images;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// diffusers' <c>padding_mask_crop</c> in one inpainting call: the region around the mask that is inpainted at the full
/// processing size (image, mask and control images cropped to it and resized in <see cref="ResizeMode.Fill"/> mode), and
/// what the generated images are laid back onto (the original image, kept where the mask is black).
/// </summary>
internal sealed record MaskCrop(CropRegion Region, ImageBuffer Image, ImageBuffer Mask)
{
    /// <summary>
    /// The crop for <paramref name="pad"/> (null without one), checked as diffusers' <c>check_inputs</c> does (images, not
    /// tensors; output type Image) and further before any compute: the mask must match the image's size (diffusers fails
    /// on that only when pasting back, after denoising) and mark something to inpaint.
    /// </summary>
    /// <exception cref="ArgumentException">An input that cannot be cropped.</exception>
    public static MaskCrop? For(int? pad, PipelineImage? image, PipelineImage? mask, OutputType outputType, int height, int width)
    {
        if (pad is not { } p) return null;
        if (image?.Image is not { } pixels) throw new ArgumentException("padding_mask_crop needs the image as an 8-bit image, not a tensor.");
        if (mask?.Image is not { } maskPixels) throw new ArgumentException("padding_mask_crop needs mask_image as an 8-bit image, not a tensor.");
        if (outputType != OutputType.Image)
            throw new ArgumentException($"padding_mask_crop pastes the result back onto the image, so output_type must be Image, not {outputType}.");
        if (maskPixels.Width != pixels.Width || maskPixels.Height != pixels.Height)
            throw new ArgumentException($"padding_mask_crop needs mask_image ({maskPixels.Width}x{maskPixels.Height}) of the image's size ({pixels.Width}x{pixels.Height}).");
        return new MaskCrop(VaeImageProcessor.GetCropRegion(maskPixels, width, height, p), pixels, maskPixels);
    }

    /// <summary>diffusers' <c>apply_overlay</c> of every generated image: each comes back at the original image's size.</summary>
    public IReadOnlyList<ImageBuffer> Overlay(VaeImageProcessor processor, IReadOnlyList<ImageBuffer> images) =>
        images.Select(i => processor.ApplyOverlay(Mask, Image, i, Region)).ToArray();
}
