using DiffusersSharp.Images;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// The arguments of a SANA-Sprint image-to-image call (diffusers' <c>SanaSprintImg2ImgPipeline.__call__</c>), with its
/// defaults: SANA-Sprint's (2 steps, the intermediate angle 1.3, the embedded guidance 4.5) and strength 0.6.
/// </summary>
public sealed record SanaSprintImg2ImgRequest : SanaSprintRequest
{
    /// <summary>diffusers' default strength.</summary>
    public const double DefaultStrength = 0.6;

    /// <summary>The image to start from; resized to the run's size (Pillow's lanczos, as VaeImageProcessor.preprocess).</summary>
    public ImageBuffer? Image { get; init; }

    /// <summary>How much of the schedule runs, in [0, 1]: the first <c>int(steps − steps·strength)</c> angles are skipped
    /// and the image is noised at the first angle that runs.</summary>
    public double Strength { get; init; } = DefaultStrength;
}
