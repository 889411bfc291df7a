using DiffusersSharp.Models;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// Few-step image-to-image with SANA-Sprint (diffusers' <c>SanaSprintImg2ImgPipeline</c>): the image resized to the run's
/// size and encoded by the DC-AE (times scaling_factor and sigma_data), the schedule entered at the strength's first
/// angle t (<c>int(steps − steps·strength)</c> angles skipped), <c>cos t · image_latents + sin t · sigma_data · noise</c>
/// as the start, then SANA-Sprint's loop (<see cref="SanaSprintPipelineBase"/>); the last denoised prediction is decoded.
/// </summary>
public sealed class SanaSprintImg2ImgPipeline : SanaSprintPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public SanaSprintImg2ImgPipeline(SanaComponents components) : base(components) { }

    /// <summary>Loads a diffusers SANA-Sprint pipeline folder or hub repo id.</summary>
    public static SanaSprintImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = SanaComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new SanaSprintImg2ImgPipeline(components);
    }

    /// <summary>The first angle of the schedule that runs: diffusers' <c>get_timesteps</c>,
    /// <c>int(max(steps − min(steps·strength, steps), 0))</c>.</summary>
    public static int StartIndex(int steps, double strength) => (int)Math.Max(steps - Math.Min(steps * strength, steps), 0);

    /// <summary>Generates images from <see cref="SanaSprintImg2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="NotSupportedException">clean_caption was asked for.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public SanaOutput Generate(SanaSprintImg2ImgRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width, requested) = BinnedSize(r);
        using var schedulers = Components.CreateScheduler();
        var scm = Scm(schedulers);
        CheckInputs(r, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var vae = Components.Vae;

        var image = ImageProcessor.Preprocess(r.Image!, height, width).to(vae.WeightDtype(), device);
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, mask, _, _) = EncodeCore(r, cfg: false);
        progress?.Report(new PipelineProgress("encode", 1, 1));

        scm.SetTimesteps(r.NumInferenceSteps, r.MaxTimesteps, r.IntermediateTimesteps);
        int first = StartIndex(r.NumInferenceSteps, r.Strength);
        scm.SetBeginIndex(first);
        double sigmaData = scm.Config.SigmaData;
        Tensor latents;
        if (r.Latents is { } given) latents = given.to(ScalarType.Float32, device);
        else
        {
            var shape = LatentShape(r, height, width);
            Components.Activate("vae");
            var imageLatents = vae.Encode(image) * vae.Config.ScalingFactor * sigmaData;
            // One image serves every prompt and image per prompt (diffusers' torch.cat([image_latents] * n)).
            if (shape[0] > imageLatents.shape[0]) imageLatents = imageLatents.repeat(shape[0] / imageLatents.shape[0], 1, 1, 1);
            var noise = RandomDraws.Randn(shape, r.Generator, r.Generators, ScalarType.Float32, device) * sigmaData;
            var angle = tensor(scm.TimestepValues[first], ScalarType.Float32, device);
            latents = angle.cos() * imageLatents + angle.sin() * noise;
        }
        var final = Denoise(scm, first, latents, embeds, mask, r, progress, cancellationToken);
        if (r.OutputType == OutputType.Latent)
            return new SanaOutput(null, final.DetachFromDisposeScope());
        var (images, output) = DecodeAndFinish(progress, () => Decode(final, r.OutputType, requested));
        return new SanaOutput(images, output);
    }

    private protected override void CheckInputs(SanaRequest r, int height, int width)
    {
        var request = (SanaSprintImg2ImgRequest)r;
        if (request.Image is null)
            throw new ArgumentException("SANA-Sprint image-to-image needs an image.");
        if (!(request.Strength >= 0 && request.Strength <= 1))
            throw new ArgumentException($"strength must be in [0, 1], got {request.Strength}.");
        if (r.NumInferenceSteps - StartIndex(r.NumInferenceSteps, request.Strength) < 1)
            throw new ArgumentException($"strength {request.Strength} leaves no step of {r.NumInferenceSteps} (diffusers raises the same).");
        base.CheckInputs(r, height, width);
    }
}
