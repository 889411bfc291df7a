using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// FLUX.2 [klein] text-to-image and multi-reference editing (diffusers' <c>Flux2KleinPipeline</c>, v0.39); see
/// <see cref="Flux2KleinPipelineBase"/> for the loop. Prompts in
/// Qwen3's chat template -> the stacked hidden states of three Qwen3 layers, padded to max_sequence_length
/// (<see cref="Flux2KleinPromptEncoder"/>), or given embeddings, repeated per image -> noise drawn directly as patchified
/// latents [B, 4·C, H/16, W/16], packed to tokens with 4-axis positions (t, h, w, l) -> FlowMatchEuler steps (sigmas
/// <c>linspace(1, 1/N, N)</c>, mu from <c>compute_empirical_mu</c>) over the transformer, fed σ = t / 1000, the reference
/// images' normalised VAE latents appended to the image tokens at t = 10, 20, … and their predictions dropped; CFG (not on
/// step-distilled models) runs the negative text in a second forward and takes <c>neg + s · (pos − neg)</c> -> unpack,
/// <c>latents · sqrt(var + eps) + mean</c> with the VAE's batch-norm statistics, unpatchify, VAE decode.
/// </summary>
public sealed class Flux2KleinPipeline : Flux2KleinPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public Flux2KleinPipeline(Flux2KleinComponents components) : base(components) { }

    /// <summary>Loads a diffusers FLUX.2 [klein] pipeline folder or hub repo id (<see cref="Flux2KleinComponents.FromPretrained"/>).</summary>
    public static Flux2KleinPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = Flux2KleinComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new Flux2KleinPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image / reference-editing pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static Flux2KleinPipeline FromPipe(Flux2KleinPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new Flux2KleinPipeline(other.Components);
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public Flux2Output Generate(Flux2KleinRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width) = OutputSize(r);
        CheckInputs(r, height, width);
        if (r.Images is { } references)
            for (int i = 0; i < references.Count; i++)
            {
                if (references[i] is null) throw new ArgumentException($"Reference image {i} is null.");
                Flux2ImageProcessor.CheckImageInput(references[i], $"Reference image {i}");
            }
        bool cfg = DoesCfg(r);
        int prompts = PromptCount(r), batch = prompts * r.NumImagesPerPrompt;

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var positive = TextSide(r.Prompt?.Items, r.PromptEmbeds, prompts, r, cancellationToken);
        // diffusers encodes "" for the negative side (no negative prompt text is taken).
        Tensor? negative = cfg ? TextSide(Enumerable.Repeat("", prompts).ToArray(), r.NegativePromptEmbeds, prompts, r, cancellationToken) : null;
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        // prepare_latents: noise drawn as patchified latents in the prompt embeddings' dtype (or the given ones), packed.
        var dtype = positive.dtype;
        int gridH = height / SizeMultiple, gridW = width / SizeMultiple;
        int channels = Components.Transformer.Config.InChannels;
        var noise = r.Latents is { } given
            ? given.to(dtype, device, copy: true)
            : RandomDraws.Randn([batch, channels, gridH, gridW], r.Generator, r.Generators, dtype, device);
        var latents = Pack(noise);
        var latentIds = PositionIds(0, gridH, gridW, device);

        Tensor? imageLatents = null, imageIds = null;
        if (r.Images is { Count: > 0 } images) (imageLatents, imageIds) = EncodeReferenceImages(images, batch);

        int steps = r.NumInferenceSteps ?? DefaultSteps;
        using var scheduler = new FlowMatchEulerDiscreteScheduler(Components.SchedulerConfig);
        var sigmas = r.Sigmas ?? Flux.FluxPipelineBase.DefaultSigmas(steps);
        // diffusers computes mu from num_inference_steps even when custom sigmas set the step count.
        scheduler.SetTimesteps(sigmas.Length, device, sigmas, ComputeEmpiricalMu((int)latents.shape[1], steps));
        latents = Denoise(latents, latentIds, imageLatents, imageIds, positive, negative, scheduler, scheduler.Timesteps, r, progress, cancellationToken);
        return DecodeAndFinish(progress, () => DecodeOnDevice(latents, r.OutputType, gridH, gridW));
    }

    /// <summary>The output size of <paramref name="r"/>: its height and width, else the first reference image's encoded size
    /// (<see cref="Flux2ImageProcessor.ReferenceSize"/>), else 1024 × 1024.</summary>
    public (int Height, int Width) OutputSize(Flux2KleinRequest r)
    {
        ArgumentNullException.ThrowIfNull(r);
        (int Width, int Height)? first = r.Images is { Count: > 0 } images && images[0] is { } image
            ? Flux2ImageProcessor.ReferenceSize(image, SizeMultiple) : null;
        return (r.Height ?? first?.Height ?? DefaultSize, r.Width ?? first?.Width ?? DefaultSize);
    }

    /// <summary>
    /// diffusers' <c>prepare_image_latents</c>: each reference image preprocessed, encoded by the VAE (the posterior's
    /// mode), patchified and normalised with the batch-norm statistics, packed, all concatenated along the tokens and
    /// repeated to the batch ([batch, Σ h·w, 4C], in the VAE's dtype), with their positions at t = 10, 20, … ([Σ h·w, 4]).
    /// </summary>
    private (Tensor Latents, Tensor Ids) EncodeReferenceImages(IReadOnlyList<ImageBuffer> images, int batch)
    {
        var device = Components.Device;
        var packed = new List<Tensor>(images.Count);
        var ids = new List<Tensor>(images.Count);
        for (int i = 0; i < images.Count; i++)
        {
            var latents = EncodeImageLatents(Flux2ImageProcessor.PreprocessReference(images[i], ImageProcessor, SizeMultiple));
            packed.Add(Pack(latents));
            ids.Add(PositionIds(ReferenceTimeOffset * (i + 1), (int)latents.shape[2], (int)latents.shape[3], device));
        }
        var all = cat(packed.ToArray(), 1);
        return (all.repeat(batch, 1, 1), cat(ids.ToArray(), 0));
    }
}
