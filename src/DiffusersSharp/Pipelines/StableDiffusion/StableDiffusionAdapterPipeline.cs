namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>Text-to-image with Stable Diffusion 1.x / 2.x steered by T2I-Adapters (diffusers'
/// <c>StableDiffusionAdapterPipeline</c>): the adapter image's feature maps, scaled, are added inside the UNet's down
/// blocks at every step.</summary>
public sealed class StableDiffusionAdapterPipeline : StableDiffusionPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold a T2I-Adapter.</summary>
    /// <exception cref="ArgumentException">The components are of the other model family, or have no adapter.</exception>
    public StableDiffusionAdapterPipeline(StableDiffusionComponents components) : base(WithAdapters(components), xl: false) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id and a T2I-Adapter folder or hub repo id beside it
    /// (diffusers' <c>from_pretrained(base, adapter=T2IAdapter.from_pretrained(adapter))</c>).</summary>
    public static StableDiffusionAdapterPipeline FromPretrained(string model, string adapter, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default) => FromPretrained(model, [adapter], options, cancellationToken);

    /// <summary>Loads a diffusers pipeline folder or hub repo id and several T2I-Adapters beside it (diffusers'
    /// <c>MultiAdapter</c>; give the images, and any per-adapter scales, in the same order).</summary>
    public static StableDiffusionAdapterPipeline FromPretrained(string model, IReadOnlyList<string> adapters, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), [], adapters, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionAdapterRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionAdapterRequest), progress, cancellationToken);
}
