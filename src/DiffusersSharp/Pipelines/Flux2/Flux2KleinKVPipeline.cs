using DiffusersSharp.Models;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// FLUX.2 [klein] reference-image editing with a key / value cache (diffusers' <c>Flux2KleinKVPipeline</c>, v0.39): as
/// <see cref="Flux2KleinPipeline"/> (same components, prompt handling, noise, schedule, reference-image encoding and
/// decoding; see <see cref="Flux2KleinPipelineBase"/>), except for how the reference tokens enter the transformer. At
/// step 0 they go <b>before</b> the image tokens through the transformer's "extract" forward: modulated at the fixed
/// reference timestep 0, attending only to themselves, their keys and values cached in every block; each later step
/// runs only the image tokens, attending to the cached reference keys and values ("cached" forward). The results differ
/// from <see cref="Flux2KleinPipeline"/>'s: this is a different conditioning scheme, not a speed-up of the same one.
/// Without reference images every step is the standard forward. There is no classifier-free guidance: guidance scale and
/// negative prompt embeddings are not taken.
/// </summary>
public sealed class Flux2KleinKVPipeline : Flux2KleinPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public Flux2KleinKVPipeline(Flux2KleinComponents components) : base(components) { }

    /// <summary>Loads a diffusers FLUX.2 [klein] (KV) pipeline folder or hub repo id (<see cref="Flux2KleinComponents.FromPretrained"/>).</summary>
    public static Flux2KleinKVPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = Flux2KleinComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new Flux2KleinKVPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A KV pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static Flux2KleinKVPipeline FromPipe(Flux2KleinPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new Flux2KleinKVPipeline(other.Components);
    }

    /// <summary>Never: diffusers' KV pipeline has no classifier-free guidance, whatever the model.</summary>
    public override bool DoesCfg(Flux2KleinRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return false;
    }

    /// <summary>
    /// Generates images (diffusers' <c>__call__</c>). The request's <see cref="Flux2KleinRequest.GuidanceScale"/> must stay
    /// at its default and <see cref="Flux2KleinRequest.NegativePromptEmbeds"/> unset: this pipeline has no CFG.
    /// </summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public Flux2Output Generate(Flux2KleinRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request is Flux2KleinInpaintRequest)
            throw new ArgumentException("Flux2KleinKVPipeline does not inpaint: use Flux2KleinInpaintPipeline for an inpainting request.", nameof(request));
        if (request.NegativePromptEmbeds is not null)
            throw new ArgumentException("Flux2KleinKVPipeline has no classifier-free guidance: negative_prompt_embeds are not taken.", nameof(request));
        if (request.GuidanceScale != Flux2KleinRequest.DefaultGuidanceScale)
            throw new ArgumentException($"Flux2KleinKVPipeline has no classifier-free guidance: leave guidance_scale at its default, got {request.GuidanceScale}.", nameof(request));
        return GenerateWithReferences(request, progress, cancellationToken);
    }

    /// <summary>The output size of <paramref name="r"/>: its height and width, else the first reference image's encoded size
    /// (<see cref="Flux2ImageProcessor.ReferenceSize"/>), else 1024 × 1024.</summary>
    public (int Height, int Width) OutputSize(Flux2KleinRequest r) => ReferenceOutputSize(r);

    /// <summary>The KV cache's step forward (reference tokens extracted at step 0, reused after).</summary>
    private protected override Flux2StepForward? ReferenceForward(Tensor latentIds, Tensor? imageLatents, Tensor? imageIds) =>
        new Flux2KVReferenceForward(Components.Transformer, latentIds, imageLatents?.to(Components.Transformer.WeightDtype()), imageIds);
}
