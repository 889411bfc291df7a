namespace DiffusersSharp.Pipelines.PixArt;

/// <summary>
/// Text-to-image with PixArt-Σ (diffusers' <c>PixArtSigmaPipeline</c>; e.g. PixArt-alpha/PixArt-Sigma-XL-2-1024-MS):
/// T5 prompts up to 300 tokens, no micro-conditions. See <see cref="PixArtPipelineBase"/> for the data flow.
/// </summary>
public sealed class PixArtSigmaPipeline : PixArtPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public PixArtSigmaPipeline(PixArtComponents components) : base(components) { }

    /// <summary>Loads a diffusers PixArt pipeline folder or hub repo id.</summary>
    public static PixArtSigmaPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = PixArtComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new PixArtSigmaPipeline(components);
    }

    /// <summary>diffusers' default max_sequence_length of PixArt-Σ.</summary>
    public const int DefaultSequenceLength = 300;

    /// <inheritdoc />
    public override int DefaultMaxSequenceLength => DefaultSequenceLength;

    /// <inheritdoc />
    protected override bool PassesMicroConditions => false;

    /// <inheritdoc />
    protected override string PipelineName => PixArtComponents.SigmaPipelineClass;
}
