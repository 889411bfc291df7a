using System.Diagnostics;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Training.Shapes;

namespace DiffusersSharp.Training;

/// <summary>What a <see cref="ShapesEvaluation"/> run exercises.</summary>
public enum ShapesEvaluationMode
{
    /// <summary>Text-to-image from the caption.</summary>
    TextToImage,

    /// <summary>Text-to-image with a negative prompt naming another shape: the same caption with the next shape kind.</summary>
    NegativePrompt,

    /// <summary>Image-to-image recolouring: the scene drawn with another shape colour, prompted with the caption.</summary>
    ImageToImage,

    /// <summary>Inpainting: the scene drawn with another shape kind, its bounding box (grown) masked, prompted with the caption.</summary>
    Inpainting,
}

/// <summary>Settings of a <see cref="ShapesEvaluation"/> run (null: the pipeline's default).</summary>
public sealed record ShapesEvaluationSettings
{
    /// <summary>The mode.</summary>
    public ShapesEvaluationMode Mode { get; init; } = ShapesEvaluationMode.TextToImage;

    /// <summary>Denoising steps.</summary>
    public int? Steps { get; init; }

    /// <summary>Guidance scale.</summary>
    public double GuidanceScale { get; init; } = 7.0;

    /// <summary>Image i uses seed <c>Seed + i</c>.</summary>
    public long Seed { get; init; }

    /// <summary>A negative prompt for every text-to-image generation (the negative-prompt mode makes its own).</summary>
    public string? NegativePrompt { get; init; }

    /// <summary>Strength of image-to-image and inpainting (null: the requests' default, 0.6 as in diffusers).</summary>
    public double? Strength { get; init; }

    /// <summary>Growth of the inpainting mask beyond the shape's bounding box, as a fraction of the image side.</summary>
    public float MaskGrow { get; init; } = 0.05f;
}

/// <summary>One generated image and what the checker read from it.</summary>
/// <param name="Caption">The prompt.</param>
/// <param name="Seed">The generator seed.</param>
/// <param name="Image">The generated image.</param>
/// <param name="Reading">The checker's reading.</param>
/// <param name="Mismatches">Attributes read wrong (empty when right).</param>
/// <param name="Source">The scene given to image-to-image or inpainting (null for text-to-image).</param>
/// <param name="NegativePrompt">The negative prompt, if any.</param>
public sealed record ShapesEvaluationItem(string Caption, long Seed, ImageBuffer Image, SceneReading Reading, IReadOnlyList<string> Mismatches,
    SceneSpec? Source = null, string? NegativePrompt = null);

/// <summary>Scores of a run over scene captions.</summary>
/// <param name="Score">Tallies per attribute against the captions.</param>
/// <param name="Items">Every image with its reading.</param>
/// <param name="SecondsPerImage">Mean wall time of one generation.</param>
/// <param name="Avoided">
/// Images that do not show what the mode moves away from: the negative prompt's shape (negative-prompt mode), the source's
/// shape colour (image-to-image) or the source's shape kind (inpainting); null for text-to-image.
/// </param>
public sealed record ShapesEvaluationResult(SceneScore Score, IReadOnlyList<ShapesEvaluationItem> Items, double SecondsPerImage, int? Avoided = null);

/// <summary>Measures a shapes model: generate from each scene caption, read the image back with <see cref="SceneChecker"/>.</summary>
public static class ShapesEvaluation
{
    /// <summary>
    /// Runs <paramref name="settings"/>' mode over <paramref name="scenes"/> with pipelines sharing <paramref name="components"/>;
    /// every image is checked against its scene's caption.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The strength is outside [0, 1].</exception>
    public static ShapesEvaluationResult Run(StableDiffusion3Components components, IReadOnlyList<SceneSpec> scenes, ShapesEvaluationSettings settings,
        IProgress<ShapesEvaluationItem>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(components);
        ArgumentNullException.ThrowIfNull(scenes);
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.Strength is { } s && !(s is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(settings), s, "strength must be in [0, 1].");
        using var text = new StableDiffusion3Pipeline(components);
        using var img2img = new StableDiffusion3Img2ImgPipeline(components);
        using var inpaint = new StableDiffusion3InpaintPipeline(components);
        int size = text.DefaultSize;
        var score = new SceneScore();
        var items = new List<ShapesEvaluationItem>();
        int avoided = 0;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < scenes.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var scene = scenes[i];
            long seed = settings.Seed + i;
            using var generator = new Runtime.Generator().ManualSeed(seed);
            SceneSpec? source = null;
            string? negative = settings.NegativePrompt;
            var negativeScene = settings.Mode == ShapesEvaluationMode.NegativePrompt ? OtherShape(scene.Description) : null;
            StableDiffusion3Output output;
            switch (settings.Mode)
            {
                case ShapesEvaluationMode.ImageToImage:
                    source = Recoloured(scene);
                    var i2i = new StableDiffusion3Img2ImgRequest
                    {
                        Prompt = scene.Caption, Image = ShapeScenes.Draw(source, size),
                        NumInferenceSteps = settings.Steps, GuidanceScale = settings.GuidanceScale, Generator = generator,
                    };
                    output = img2img.Generate(settings.Strength is { } i2iStrength ? i2i with { Strength = i2iStrength } : i2i, cancellationToken: cancellationToken);
                    break;
                case ShapesEvaluationMode.Inpainting:
                    source = Reshaped(scene);
                    var fill = new StableDiffusion3InpaintRequest
                    {
                        Prompt = scene.Caption, Image = ShapeScenes.Draw(source, size), MaskImage = SceneRenderer.BoxMask(scene, size, settings.MaskGrow),
                        NumInferenceSteps = settings.Steps, GuidanceScale = settings.GuidanceScale, Generator = generator,
                    };
                    output = inpaint.Generate(settings.Strength is { } fillStrength ? fill with { Strength = fillStrength } : fill, cancellationToken: cancellationToken);
                    break;
                default:
                    if (negativeScene is not null) negative = negativeScene.Caption;
                    output = text.Generate(new StableDiffusion3Request
                    {
                        Prompt = scene.Caption, NegativePrompt = negative is null ? (PromptList?)null : new PromptList([negative]),
                        NumInferenceSteps = settings.Steps, GuidanceScale = settings.GuidanceScale, Generator = generator,
                    }, cancellationToken: cancellationToken);
                    break;
            }
            ImageBuffer image;
            using (output) image = output.Images![0];
            var reading = SceneChecker.Check(image);
            var wrong = score.Add(scene.Description, reading);
            avoided += settings.Mode switch
            {
                ShapesEvaluationMode.NegativePrompt => reading.Shape != negativeScene!.Shape ? 1 : 0,
                ShapesEvaluationMode.ImageToImage => reading.ShapeColor != source!.ShapeColor ? 1 : 0,
                ShapesEvaluationMode.Inpainting => reading.Shape != source!.Shape ? 1 : 0,
                _ => 0,
            };
            var item = new ShapesEvaluationItem(scene.Caption, seed, image, reading, wrong, source,
                settings.Mode == ShapesEvaluationMode.NegativePrompt || settings.NegativePrompt is not null ? negative : null);
            items.Add(item);
            progress?.Report(item);
        }
        return new ShapesEvaluationResult(score, items, scenes.Count == 0 ? 0 : clock.Elapsed.TotalSeconds / scenes.Count,
            settings.Mode == ShapesEvaluationMode.TextToImage ? null : avoided);
    }

    /// <summary>The description with the next shape kind (circle → square → triangle → circle).</summary>
    public static SceneDescription OtherShape(SceneDescription description)
    {
        ArgumentNullException.ThrowIfNull(description);
        var kinds = ScenePalette.Kinds;
        var kind = kinds[(IndexOf(kinds, description.Shape) + 1) % kinds.Count];
        return new SceneDescription(description.ShapeColor, kind, description.Background, description.Position);
    }

    /// <summary>The scene with the next shape colour in the palette that is neither its own nor the background's (same geometry).</summary>
    public static SceneSpec Recoloured(SceneSpec scene)
    {
        ArgumentNullException.ThrowIfNull(scene);
        var colors = ScenePalette.Colors;
        int start = IndexOf(colors, scene.ShapeColor);
        var color = Enumerable.Range(1, colors.Count).Select(k => colors[(start + k) % colors.Count]).First(c => c != scene.ShapeColor && c != scene.Background);
        var d = scene.Description;
        return new SceneSpec(new SceneDescription(color, d.Shape, d.Background, d.Position), scene.Size, scene.CenterX, scene.CenterY);
    }

    /// <summary>The scene with the next shape kind (same colours and bounding box).</summary>
    public static SceneSpec Reshaped(SceneSpec scene)
    {
        ArgumentNullException.ThrowIfNull(scene);
        return new SceneSpec(OtherShape(scene.Description), scene.Size, scene.CenterX, scene.CenterY);
    }

    private static int IndexOf<T>(IReadOnlyList<T> list, T value)
    {
        for (int i = 0; i < list.Count; i++)
            if (EqualityComparer<T>.Default.Equals(list[i], value)) return i;
        throw new ArgumentOutOfRangeException(nameof(value), value, "not in the palette.");
    }
}
