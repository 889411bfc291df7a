using DiffusersSharp.Training;
using DiffusersSharp.Training.Shapes;
using Xunit.Abstractions;

namespace DiffusersSharp.Tests.Shipped;

/// <summary>
/// The shipped model's measured quality: images generated at the pipeline defaults (28 steps, guidance 7, 128x128, CPU
/// float32) unless a strength is named, read back by the scene checker; 50 held-out captions (combinations never trained
/// on) with seeds 0..49, exactly as `diffusers check-shapes --count 50 [--mode M]` runs them, so the README's numbers can be
/// reproduced. Each bound is the rate measured when the model was committed less one image (another CPU's kernels may
/// round one borderline image the other way). Issue 9's goal is 45 of 50 held-out captions; 46 were measured.
/// </summary>
public sealed class ShippedModelQualityTests(ShippedModel model, ITestOutputHelper output) : IClassFixture<ShippedModel>
{
    private ShapesEvaluationResult Run(ShapesEvaluationMode mode, double? strength = null, bool training = false)
    {
        var scenes = training ? ShapeScenes.TrainingScenes(0).Take(50).ToArray() : ShapeScenes.HeldOutScenes(50, seed: 0);
        var result = ShapesEvaluation.Run(model.Components, scenes, new ShapesEvaluationSettings { Mode = mode, Strength = strength });
        output.WriteLine($"{mode}: {result.Score}; avoided {result.Avoided}; {result.SecondsPerImage:0.00} s per image");
        foreach (var item in result.Items.Where(i => i.Mismatches.Count > 0))
            output.WriteLine($"  wrong: \"{item.Caption}\" -> {item.Reading.Description?.Caption ?? item.Reading.ToString()}");
        return result;
    }

    [Fact]
    public void HeldOutCaptionsAreDrawnRightWithinThreeSecondsEach()
    {
        var result = Run(ShapesEvaluationMode.TextToImage);
        Assert.True(result.Score.Correct >= 45, $"{result.Score} (measured 46/50 at commit; the goal is 45)");
        Assert.True(result.SecondsPerImage <= 3.0, $"{result.SecondsPerImage:0.00} s per 128x128 image at 28 steps");
    }

    [Fact]
    public void TrainingCaptionsAreDrawnRight()
    {
        var result = Run(ShapesEvaluationMode.TextToImage, training: true);
        Assert.True(result.Score.Correct >= 44, $"{result.Score} (measured 45/50 at commit)");
    }

    [Fact]
    public void ANegativePromptNamingAnotherShapeKeepsThatShapeAway()
    {
        var result = Run(ShapesEvaluationMode.NegativePrompt);
        Assert.True(result.Avoided >= 49, $"{result.Avoided}/50 images avoid the negative prompt's shape (measured 50 at commit)");
    }

    [Fact]
    public void ImageToImageRecoloursTheShape()
    {
        var result = Run(ShapesEvaluationMode.ImageToImage, strength: 0.8);
        Assert.True(result.Avoided >= 49, $"{result.Avoided}/50 images lose the source colour (measured 50 at commit)");
        Assert.True(result.Score.Correct >= 35, $"{result.Score} (measured 36/50 at commit)");
    }

    [Fact]
    public void InpaintingReplacesTheShapeInsideTheMask()
    {
        var result = Run(ShapesEvaluationMode.Inpainting, strength: 1.0);
        Assert.True(result.Avoided >= 49, $"{result.Avoided}/50 images lose the source shape (measured 50 at commit)");
        Assert.True(result.Score.Correct >= 43, $"{result.Score} (measured 44/50 at commit)");
        Assert.True(result.Score.BackgroundCorrect == 50, $"{result.Score}: the unmasked background must stay");
    }
}
