using DiffusersSharp.Models.ControlNets;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Text-to-image with SD3 / SD3.5 steered by one or several SD3 ControlNets (diffusers'
/// <c>StableDiffusion3ControlNetPipeline</c>): the control image is encoded by the VAE, and each step the ControlNets'
/// per-block residuals, scaled and within their guidance windows, are added to the transformer's image stream.
/// </summary>
public sealed class StableDiffusion3ControlNetPipeline : StableDiffusion3ControlNetPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold at least one SD3 ControlNet.</summary>
    /// <exception cref="ArgumentException">The components have no ControlNet, or one that does not fit.</exception>
    public StableDiffusion3ControlNetPipeline(StableDiffusion3Components components)
        : base(components, extraConditioningChannels: 0, several: true, "StableDiffusion3ControlNetPipeline") { }

    /// <summary>Loads a diffusers SD3 pipeline folder or hub repo id and an SD3 ControlNet folder or hub repo id beside it.</summary>
    public static StableDiffusion3ControlNetPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnet, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Loads a diffusers SD3 pipeline and several SD3 ControlNets beside it (diffusers' <c>SD3MultiControlNetModel</c>;
    /// give the control images, and any per-ControlNet settings, in the same order).</summary>
    public static StableDiffusion3ControlNetPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new(components);
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusion3Output Generate(StableDiffusion3ControlNetRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckControlInputs(request, (3, "[-1, 1]"));
        return Run(request, height, width, (batch, cfg) => EncodeControlImages(request, height, width, batch, cfg),
            pooled => Components.ControlNets[0].Config.ForceZerosForPooledProjection ? zeros_like(pooled) : request.ControlNetPooledProjections ?? pooled,
            progress, cancellationToken);
    }

    /// <summary>
    /// diffusers' prepare_image and VAE encode, per ControlNet: the control image at the output size in [-1, 1], repeated to
    /// the batch (one image for all, or one per prompt repeated per image), doubled under CFG, then a VAE posterior sample
    /// (drawn from <see cref="StableDiffusion3ControlNetRequest.ControlImageGenerator"/>, in ControlNet order) as
    /// <c>(latents - shift) x scaling</c>, the shift 0 when the first ControlNet forces zero pooled projections.
    /// </summary>
    private Tensor[] EncodeControlImages(StableDiffusion3ControlNetRequest r, int height, int width, int batch, bool cfg)
    {
        var nets = Components.ControlNets;
        var vae = Components.Vae;
        double shift = nets[0].Config.ForceZerosForPooledProjection ? 0 : vae.Config.ShiftFactor ?? 0;
        var generator = ControlGenerator(r);
        var sources = SettingsOf(r).ControlImages;
        var result = new Tensor[nets.Count];
        Components.Activate("vae");
        for (int k = 0; k < nets.Count; k++)
        {
            using var scope = NewDisposeScope();
            var image = sources[k].Image is { } pixels ? ImageProcessor.Preprocess(pixels, height, width) : sources[k].Tensor!;
            if (image.shape[0] != 1 && image.shape[0] * r.NumImagesPerPrompt != batch)
                throw new ArgumentException($"The control image batch ({image.shape[0]}) must be 1 or the prompt batch ({batch / r.NumImagesPerPrompt}).");
            long repeat = image.shape[0] == 1 ? batch : r.NumImagesPerPrompt;
            image = image.repeat_interleave(repeat, 0).to(Components.Transformer.Dtype, Components.Device);
            if (cfg) image = cat([image, image], 0);
            var sample = RandomDraws.SampleVae(vae, image, generator, null, Components.Device);
            result[k] = ((sample - shift) * vae.Config.ScalingFactor).MoveToOuterDisposeScope();
        }
        return result;
    }
}
