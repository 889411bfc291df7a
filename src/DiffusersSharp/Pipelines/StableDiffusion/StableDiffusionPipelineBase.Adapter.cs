using DiffusersSharp.Images;
using DiffusersSharp.Models.Adapters;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The T2I-Adapter pipelines' part: the adapter images, their feature maps and the steps that take them.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>What the loop needs for the adapters: the feature maps as the UNet takes them (scaled or weighted and
    /// summed, repeated per image, doubled under CFG), and how many steps take them.</summary>
    private sealed record AdapterState(Tensor[] States, int ActiveSteps);

    /// <summary>The adapter pipelines' constructor check: <paramref name="components"/> must hold a T2I-Adapter (checked
    /// before the base takes its reference).</summary>
    private protected static StableDiffusionComponents WithAdapters(StableDiffusionComponents components)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.Adapters.Count == 0)
            throw new ArgumentException("These components have no T2I-Adapter; load them with StableDiffusionComponents.FromPretrained(model, options, [], [adapter]).",
                nameof(components));
        return components;
    }

    /// <summary>
    /// diffusers' <c>_preprocess_adapter_image</c> for an 8-bit image: resized with Pillow's LANCZOS to exactly the
    /// output size, its own channels kept (<c>np.array(image)</c>: RGB, or L as one channel), divided by 255 in float32;
    /// no normalization. That is a <see cref="VaeImageProcessor"/> of scale factor 1 without normalization.
    /// </summary>
    private static VaeImageProcessor AdapterImageProcessor => new(new VaeImageProcessorConfig { VaeScaleFactor = 1, DoNormalize = false });

    /// <summary>The request's adapter images, one per adapter: the list, or the single image as a list of one.</summary>
    private static IReadOnlyList<PipelineImage> AdapterImagesOf(StableDiffusionAdapterRequest r) => r.Images ?? (r.Image is { } one ? [one] : []);

    /// <summary>The scale (weight) of each of <paramref name="count"/> adapters: the list, or the single value for all.</summary>
    private static double[] AdapterScalesOf(StableDiffusionAdapterRequest r, int count) =>
        r.AdapterConditioningScales?.ToArray() ?? Enumerable.Repeat(r.AdapterConditioningScale, count).ToArray();

    /// <summary>diffusers' <c>_default_height_width</c>: the request's size, else the (first) adapter image's rounded down
    /// to a multiple of the adapter's downscale_factor.</summary>
    private (int Height, int Width) AdapterSize(PipelineImage image, StableDiffusionRequest r)
    {
        int f = Components.Adapters.Count > 0 ? Components.Adapters[0].DownscaleFactor : 1;
        var (h, w) = image.Image is { } pixels ? (pixels.Height, pixels.Width)
            : image.Tensor!.dim() >= 2 ? ((int)image.Tensor.shape[^2], (int)image.Tensor.shape[^1]) : (0, 0);
        return (r.Height ?? h / f * f, r.Width ?? w / f * f);
    }

    /// <summary>
    /// The adapter request's own checks, before any compute: diffusers' check_inputs (one image per adapter with a
    /// MultiAdapter) and what its adapter and UNet calls would fail on (an image of other channels or, as a tensor, of
    /// another size; sides the adapter cannot unshuffle; an image batch other than the prompts'; feature maps that do not
    /// fit the UNet), and the parameters the SD 1.x / 2.x adapter pipeline does not have.
    /// </summary>
    private void CheckAdapterInputs(StableDiffusionAdapterRequest r, int height, int width)
    {
        var adapters = Components.Adapters;
        int n = adapters.Count;
        if (n == 0)
            throw new ArgumentException("These components have no T2I-Adapter; load them with StableDiffusionComponents.FromPretrained(model, options, [], [adapter]).");
        if (!IsXL)
        {
            // What diffusers' StableDiffusionAdapterPipeline lacks is refused rather than silently used or ignored.
            if (r.AdapterConditioningFactor != 1.0)
                throw new ArgumentException("adapter_conditioning_factor is not a parameter of diffusers' StableDiffusionAdapterPipeline (only its SDXL adapter pipeline has it).");
            if (r.GuidanceRescale != 0)
                throw new ArgumentException("guidance_rescale is not a parameter of diffusers' StableDiffusionAdapterPipeline (its SDXL adapter pipeline has it).");
            if (r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null || r.IpAdapterScale is not null)
                throw new ArgumentException("diffusers' StableDiffusionAdapterPipeline takes no IP-Adapter inputs (its SDXL adapter pipeline does).");
        }
        if (!double.IsFinite(r.AdapterConditioningFactor))
            throw new ArgumentException($"adapter_conditioning_factor must be a finite number, got {r.AdapterConditioningFactor}.");
        if (r.Image is not null && r.Images is not null)
            throw new ArgumentException("Give image (one adapter image) or a list of adapter images, not both.");
        var images = AdapterImagesOf(r);
        if (images.Count == 0) throw new ArgumentException("image (the adapter image) is required.");
        if (images.Count != n)
            throw new ArgumentException($"{n} adapter(s) take {n} image(s), one per adapter in order (diffusers' MultiAdapter requires the same number of images as adapters); got {images.Count}.");
        if (r.AdapterConditioningScales is { } scales && scales.Count != n)
            throw new ArgumentException($"adapter_conditioning_scale has {scales.Count} element(s) but there are {n} adapter(s); give one per adapter.");
        foreach (double scale in AdapterScalesOf(r, n))
            if (!double.IsFinite(scale)) throw new ArgumentException($"adapter_conditioning_scale must be a finite number, got {scale}.");
        int f = adapters[0].DownscaleFactor;
        if (height % f != 0 || width % f != 0)
            throw new ArgumentException($"height and width must be multiples of the adapter's downscale_factor {f} (its input is pixel-unshuffled by it), got {height}x{width}.");
        int prompts = BatchSize(r);
        for (int k = 0; k < n; k++)
        {
            var image = images[k] ?? throw new ArgumentException($"Adapter image {k} is null.");
            long channels = adapters[k].Config.InChannels, batch = 1;
            if (image.Tensor is { } t)
            {
                if (t.dim() != 4 || t.shape[1] != channels || !t.is_floating_point() || t.shape[2] != height || t.shape[3] != width)
                    throw new ArgumentException($"An adapter image tensor is used as it is (not resized): it must be a floating [B, {channels}, {height}, {width}] tensor " +
                        $"in [0, 1] for adapter {k} (in_channels {channels}, the output size), got [{string.Join(", ", t.shape)}] {t.dtype}.");
                batch = t.shape[0];
            }
            else if (image.Image!.Channels != channels)
                throw new ArgumentException($"Adapter {k} takes images of {channels} channel(s) (in_channels), but its image has {image.Image.Channels}" +
                    $"{(channels == 1 ? ": give a grayscale (L) image, e.g. ImageBuffer.ToGrayscale()" : channels == 3 ? ": give an RGB image, e.g. ImageBuffer.ToRgb()" : "")}.");
            if (batch != prompts)
                throw new ArgumentException($"Adapter image {k} has a batch of {batch}, but there are {prompts} prompt(s): diffusers pairs the adapter images with the prompts, so give one image per prompt.");
        }
        // The maps must fit the UNet (checked per image, batch 1), and several adapters must give the same maps to be summed.
        var first = adapters[0].FeatureShapes(1, height, width);
        for (int k = 1; k < n; k++)
        {
            var maps = adapters[k].FeatureShapes(1, height, width);
            if (maps.Count != first.Count || maps.Zip(first).Any(p => !p.First.SequenceEqual(p.Second)))
                throw new ArgumentException($"Adapter {k}'s feature maps ({MultiAdapter.Describe(maps)}) differ from adapter 0's ({MultiAdapter.Describe(first)}): they cannot be summed.");
        }
        Components.Unet.CheckIntrablockResidualShapes(first, 1, height / VaeScaleFactor, width / VaeScaleFactor);
    }

    /// <summary>
    /// The adapter features of the call, as diffusers' adapter pipelines make them: each adapter image preprocessed
    /// (<see cref="AdapterImageProcessor"/>; a tensor as it is); one adapter's maps times its scale, or several adapters'
    /// maps weighted by their scales and summed in order (<c>MultiAdapter</c>, the weights in float32); then repeated
    /// num_images_per_prompt times along the batch (tiled, as diffusers' <c>repeat</c>) and doubled under CFG. Step i takes
    /// them while i &lt; <paramref name="activeSteps"/>.
    /// </summary>
    private AdapterState PrepareAdapter(StableDiffusionAdapterRequest r, int height, int width, int numImagesPerPrompt, bool cfg, int activeSteps)
    {
        var adapters = Components.Adapters;
        var images = AdapterImagesOf(r);
        var processor = AdapterImageProcessor;
        Components.Activate("adapter");
        var inputs = new Tensor[adapters.Count];
        for (int k = 0; k < adapters.Count; k++)
        {
            var input = images[k].Image is { } pixels ? processor.Preprocess(pixels, height, width) : images[k].Tensor!;
            inputs[k] = input.to(adapters[k].Dtype, adapters[k].Device);
        }
        var scales = AdapterScalesOf(r, adapters.Count);
        var states = adapters.Count == 1
            ? adapters[0].forward(inputs[0]).Select(f => f * scales[0]).ToArray()
            : MultiAdapter.WeightedSum(adapters, inputs, scales.Select(s => (float)s).ToArray());
        if (numImagesPerPrompt > 1) states = states.Select(s => s.repeat(numImagesPerPrompt, 1, 1, 1)).ToArray();
        if (cfg) states = states.Select(s => cat([s, s], 0)).ToArray();
        return new AdapterState(states.Select(s => s.to(Components.Device)).ToArray(), activeSteps);
    }
}
