namespace DiffusersSharp.Pipelines.PixArt;

/// <summary>
/// Text-to-image with PixArt-α (diffusers' <c>PixArtAlphaPipeline</c>; e.g. PixArt-alpha/PixArt-XL-2-1024-MS): T5 prompts
/// up to 120 tokens; at sample_size 128 the transformer also gets the resolution [height, width] and the aspect ratio
/// height / width of the output (micro-conditions). At one step it takes the scheduler's denoised output (the one-step
/// models with an LCM scheduler). See <see cref="PixArtPipelineBase"/> for the data flow.
/// </summary>
public sealed class PixArtAlphaPipeline : PixArtPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public PixArtAlphaPipeline(PixArtComponents components) : base(components) { }

    /// <summary>Loads a diffusers PixArt pipeline folder or hub repo id.</summary>
    public static PixArtAlphaPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = PixArtComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new PixArtAlphaPipeline(components);
    }

    /// <summary>diffusers' default max_sequence_length of PixArt-α.</summary>
    public const int DefaultSequenceLength = 120;

    /// <inheritdoc />
    public override int DefaultMaxSequenceLength => DefaultSequenceLength;

    /// <inheritdoc />
    protected override bool PassesMicroConditions => Components.Transformer.Config.SampleSize == 128;

    /// <inheritdoc />
    protected override string PipelineName => PixArtComponents.AlphaPipelineClass;
}
