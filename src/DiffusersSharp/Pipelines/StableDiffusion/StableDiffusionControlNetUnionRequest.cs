using System.Globalization;

namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The control types (diffusers' <c>control_mode</c> values) of xinsir's SDXL ControlNet-Union models, in their order;
/// a model knows the first num_control_type of them (6 for controlnet-union-sdxl-1.0, all 8 for the ProMax version).
/// </summary>
public static class ControlNetUnionMode
{
    /// <summary>0: human pose (openpose).</summary>
    public const int OpenPose = 0;

    /// <summary>1: depth maps.</summary>
    public const int Depth = 1;

    /// <summary>2: soft edges and scribbles (hed, pidi, scribble, ted).</summary>
    public const int Hed = 2;

    /// <summary>3: hard edges and lines (canny, lineart, anime lineart, mlsd).</summary>
    public const int Canny = 3;

    /// <summary>4: normal maps.</summary>
    public const int Normal = 4;

    /// <summary>5: segmentation maps.</summary>
    public const int Segment = 5;

    /// <summary>6: tile (ProMax).</summary>
    public const int Tile = 6;

    /// <summary>7: repaint, the image with the area to paint blacked out (ProMax).</summary>
    public const int Repaint = 7;

    /// <summary>The names <see cref="Parse"/> takes, each with its mode.</summary>
    public static IReadOnlyDictionary<string, int> Names { get; } = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase)
    {
        ["openpose"] = OpenPose, ["depth"] = Depth,
        ["hed"] = Hed, ["pidi"] = Hed, ["scribble"] = Hed, ["ted"] = Hed,
        ["canny"] = Canny, ["lineart"] = Canny, ["anime_lineart"] = Canny, ["mlsd"] = Canny,
        ["normal"] = Normal, ["segment"] = Segment, ["tile"] = Tile, ["repaint"] = Repaint,
    };

    /// <summary>The mode of a name (<see cref="Names"/>, any case) or a non-negative index.</summary>
    /// <exception cref="ArgumentException">Neither a known name nor a non-negative integer.</exception>
    public static int Parse(string nameOrIndex)
    {
        ArgumentNullException.ThrowIfNull(nameOrIndex);
        string text = nameOrIndex.Trim();
        if (Names.TryGetValue(text, out int mode)) return mode;
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out mode)) return mode;
        throw new ArgumentException($"'{nameOrIndex}' is not a ControlNet-Union control mode: give an index (0 to 7) or a name: {string.Join(", ", Names.Keys)}.",
            nameof(nameOrIndex));
    }
}

/// <summary>
/// ControlNet-Union text-to-image parameters (diffusers' <c>StableDiffusionXLControlNetUnionPipeline.__call__</c>): the
/// control images (<c>control_image</c>) and their control types (<c>control_mode</c>, see
/// <see cref="ControlNetUnionMode"/>), one mode per image in the same order. With one ControlNet-Union the images are
/// its conditions, fused by the model, and a list of scales, starts or ends gives one value per condition; with several
/// (diffusers' <c>MultiControlNetUnionModel</c>) each takes one image and one mode and the lists give one value per
/// ControlNet. Without <see cref="StableDiffusionRequest.Height"/> / <see cref="StableDiffusionRequest.Width"/> the
/// output has the first control image's size, rounded down to a multiple of 8.
/// </summary>
public record StableDiffusionControlNetUnionRequest : StableDiffusionRequest, IControlNetUnionRequest
{
    /// <summary>The control image when there is one (RGB, resized to the output size, taken in [0, 1]; or a [1 or B, 3,
    /// H, W] tensor in [0, 1]); diffusers' <c>control_image</c> given as one image.</summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>The control images, in the order of <see cref="ControlModes"/>; instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>The control type of <see cref="ControlImage"/> (diffusers' <c>control_mode</c> as an int).</summary>
    public int? ControlMode { get; init; }

    /// <summary>One control type per control image, in order (diffusers' <c>control_mode</c> as a list).</summary>
    public IReadOnlyList<int>? ControlModes { get; init; }

    /// <summary>How strongly the conditions steer (default 1.0); all of them unless <see cref="ControlNetConditioningScales"/> is given.</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>One conditioning scale per condition (one ControlNet-Union) or per ControlNet (several).</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>Guess mode, as <see cref="StableDiffusionControlNetRequest.GuessMode"/>; only without guidance (guidance
    /// scale at most 1): diffusers' ControlNet-Union pipelines fail with it under classifier-free guidance.</summary>
    public bool GuessMode { get; init; }

    /// <summary>The fraction of the steps after which the conditions start to apply (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps after which they stop applying (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }

    double? IControlNetRequest.ConditioningScale => ControlNetConditioningScale;
    string IControlNetRequest.ImageName => "control_image";
}

/// <summary>
/// ControlNet-Union image-to-image parameters (diffusers' <c>StableDiffusionXLControlNetUnionImg2ImgPipeline.__call__</c>):
/// the starting image and strength (default 0.8) as SDXL ControlNet image-to-image has them, and the control images and
/// modes as <see cref="StableDiffusionControlNetUnionRequest"/>. The conditioning scale defaults to 0.8.
/// </summary>
public record StableDiffusionControlNetUnionImg2ImgRequest : StableDiffusionImg2ImgRequest, IControlNetUnionRequest
{
    /// <summary>The control image when there is one (see <see cref="StableDiffusionControlNetUnionRequest.ControlImage"/>).</summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>The control images, in the order of <see cref="ControlModes"/>; instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>The control type of <see cref="ControlImage"/>.</summary>
    public int? ControlMode { get; init; }

    /// <summary>One control type per control image, in order.</summary>
    public IReadOnlyList<int>? ControlModes { get; init; }

    /// <summary>How strongly the conditions steer (default 0.8, as diffusers' image-to-image union pipeline).</summary>
    public double ControlNetConditioningScale { get; init; } = 0.8;

    /// <summary>One conditioning scale per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>Guess mode (see <see cref="StableDiffusionControlNetUnionRequest.GuessMode"/>).</summary>
    public bool GuessMode { get; init; }

    /// <summary>The fraction of the steps run after which the conditions start to apply (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps run after which they stop applying (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }

    double? IControlNetRequest.ConditioningScale => ControlNetConditioningScale;
    string IControlNetRequest.ImageName => "control_image";
}

/// <summary>
/// ControlNet-Union inpainting parameters (diffusers' <c>StableDiffusionXLControlNetUnionInpaintPipeline.__call__</c>):
/// image, mask and strength (default 0.9999) as SDXL ControlNet inpainting has them (the output size is the image's;
/// no negative size / crop micro-conditioning), and the control images and modes as
/// <see cref="StableDiffusionControlNetUnionRequest"/> (for ProMax's repaint mode, the image with the masked area
/// blacked out). Only 4-channel UNets, as diffusers'. The conditioning scale defaults to 1.0.
/// </summary>
public record StableDiffusionControlNetUnionInpaintRequest : StableDiffusionInpaintRequest, IControlNetUnionRequest
{
    /// <summary>The control image when there is one (see <see cref="StableDiffusionControlNetUnionRequest.ControlImage"/>).</summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>The control images, in the order of <see cref="ControlModes"/>; instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>The control type of <see cref="ControlImage"/>.</summary>
    public int? ControlMode { get; init; }

    /// <summary>One control type per control image, in order.</summary>
    public IReadOnlyList<int>? ControlModes { get; init; }

    /// <summary>How strongly the conditions steer (default 1.0, as diffusers' union inpainting pipeline).</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>One conditioning scale per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>Guess mode (see <see cref="StableDiffusionControlNetUnionRequest.GuessMode"/>).</summary>
    public bool GuessMode { get; init; }

    /// <summary>The fraction of the steps run after which the conditions start to apply (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps run after which they stop applying (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per condition (or per ControlNet).</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }

    double? IControlNetRequest.ConditioningScale => ControlNetConditioningScale;
    string IControlNetRequest.ImageName => "control_image";
}

/// <summary>What the three ControlNet-Union requests add to a ControlNet request: the control modes.</summary>
internal interface IControlNetUnionRequest : IControlNetRequest
{
    int? ControlMode { get; }
    IReadOnlyList<int>? ControlModes { get; }
}
