using DiffusersSharp.Images;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

// The FLUX.1-Kontext pieces shared by FluxKontextPipeline and Kontext inpainting (FluxKontextInpaintPipeline, run by
// RunInpaint): the input image at its Kontext size, and its latents as context tokens with ids (1, row, column).
public abstract partial class FluxPipelineBase
{
    /// <summary>The Kontext size of an input image (its own floored to multiples of 16, or a preferred resolution); null for latents.</summary>
    private protected (int Height, int Width)? KontextInputSize(PipelineImage input, bool autoResize)
    {
        if (input.Tensor is { } t && t.dim() == 4 && t.shape[1] == Components.Vae.Config.LatentChannels) return null;
        var (imageH, imageW) = input.Image is { } pixels ? (pixels.Height, pixels.Width)
            : input.Tensor!.dim() == 4 ? ((int)input.Tensor.shape[2], (int)input.Tensor.shape[3])
            : throw new ArgumentException($"image tensor must be [N, C, H, W], got [{string.Join(", ", input.Tensor.shape)}].");
        return FluxKontextPipeline.InputImageSize(imageH, imageW, autoResize, VaeScaleFactor * 2);
    }

    /// <summary>
    /// diffusers' Kontext <c>image_processor.resize</c> of an 8-bit image to its Kontext size (Pillow keeps an image of that
    /// size as it is); tensors are left to <see cref="PreprocessImage"/>.
    /// </summary>
    private protected PipelineImage KontextResize(PipelineImage input, int height, int width) =>
        input.Image is { } pixels && (pixels.Height != height || pixels.Width != width) ? ImageProcessor.Resize(pixels, height, width) : input;

    /// <summary>
    /// A Kontext context image as [N, 3, h, w] in [-1, 1] at its Kontext size (with <paramref name="crop"/>: diffusers crops
    /// the resized image to the mask's region), or latents [N, 16, h, w] as given; checked against the batch.
    /// </summary>
    private protected Tensor PreprocessKontextInput(PipelineImage input, bool autoResize, int batch, string name, MaskCrop? crop = null)
    {
        Tensor image;
        if (KontextInputSize(input, autoResize) is not { } size)
        {
            var t = input.Tensor!;
            if (t.shape[2] % 2 != 0 || t.shape[3] % 2 != 0)
                throw new ArgumentException($"{name} given as latents must have an even height and width (they are packed 2 x 2), got [{string.Join(", ", t.shape)}].");
            image = t.alias();
        }
        else image = PreprocessImage(crop is null ? input : KontextResize(input, size.Height, size.Width), size.Height, size.Width, crop);
        Strength.CheckRepeatsToBatch(image.shape[0], batch, name);
        return image;
    }

    /// <summary>Encoded context latents [B, 16, h, w] packed to tokens, with their ids (1, row, column).</summary>
    private protected (Tensor Tokens, Tensor Ids) KontextTokens(Tensor encoded, ScalarType dtype)
    {
        var ids = LatentImageIds((int)encoded.shape[2] / 2, (int)encoded.shape[3] / 2, Components.Device, dtype);
        ids.select(1, 0).fill_(1); // the noise's ids are (0, row, column)
        return (PackLatents(encoded), ids);
    }
}
