using System.Diagnostics;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Training.Shapes;

namespace DiffusersSharp.Training;

/// <summary>One generated image and what the checker read from it.</summary>
/// <param name="Caption">The prompt.</param>
/// <param name="Seed">The generator seed.</param>
/// <param name="Image">The generated image.</param>
/// <param name="Reading">The checker's reading.</param>
/// <param name="Mismatches">Attributes read wrong (empty when right).</param>
public sealed record ShapesEvaluationItem(string Caption, long Seed, ImageBuffer Image, SceneReading Reading, IReadOnlyList<string> Mismatches);

/// <summary>Scores of a text-to-image run over scene captions.</summary>
/// <param name="Score">Tallies per attribute.</param>
/// <param name="Items">Every image with its reading.</param>
/// <param name="SecondsPerImage">Mean wall time of one generation.</param>
public sealed record ShapesEvaluationResult(SceneScore Score, IReadOnlyList<ShapesEvaluationItem> Items, double SecondsPerImage);

/// <summary>Measures a shapes model: generate each caption, read the image back with <see cref="SceneChecker"/>.</summary>
public static class ShapesEvaluation
{
    /// <summary>
    /// Generates one image per scene caption (seed <c>seed + i</c>, the pipeline's default size) and checks it.
    /// </summary>
    public static ShapesEvaluationResult TextToImage(StableDiffusion3Pipeline pipeline, IReadOnlyList<SceneSpec> scenes, int? steps = null,
        double guidance = 7.0, long seed = 0, string? negativePrompt = null, IProgress<ShapesEvaluationItem>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentNullException.ThrowIfNull(scenes);
        var score = new SceneScore();
        var items = new List<ShapesEvaluationItem>();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < scenes.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var generator = new Runtime.Generator().ManualSeed(seed + i);
            using var output = pipeline.Generate(new StableDiffusion3Request
            {
                Prompt = scenes[i].Caption, NegativePrompt = negativePrompt is null ? (Pipelines.PromptList?)null : new Pipelines.PromptList([negativePrompt]), NumInferenceSteps = steps, GuidanceScale = guidance, Generator = generator,
            }, cancellationToken: cancellationToken);
            var image = output.Images![0];
            var reading = SceneChecker.Check(image);
            var wrong = score.Add(scenes[i].Description, reading);
            var item = new ShapesEvaluationItem(scenes[i].Caption, seed + i, image, reading, wrong);
            items.Add(item);
            progress?.Report(item);
        }
        return new ShapesEvaluationResult(score, items, scenes.Count == 0 ? 0 : clock.Elapsed.TotalSeconds / scenes.Count);
    }
}
