using DiffusersSharp.Images;
using DiffusersSharp.Training.Shapes;

namespace DiffusersSharp.Tests.Training;

public sealed class SceneCheckerTests
{
    // Triangular ("Gaussian-ish") noise in [-20, 20] on every channel, deterministic: two random bytes per value.
    private static ImageBuffer Noisy(ImageBuffer image, long seed)
    {
        var rng = new ScenePrng(seed, stream: 99);
        var px = (byte[])image.Pixels.Clone();
        for (int i = 0; i < px.Length; i += 2)
        {
            uint r = rng.NextUInt();
            px[i] = (byte)Math.Clamp(px[i] + ((int)(r & 255) + (int)(r >> 8 & 255) - 255) * 20 / 255, 0, 255);
            if (i + 1 < px.Length)
                px[i + 1] = (byte)Math.Clamp(px[i + 1] + ((int)(r >> 16 & 255) + (int)(r >> 24) - 255) * 20 / 255, 0, 255);
        }
        return new ImageBuffer(image.Width, image.Height, image.Channels, px);
    }

    // 3x3 box blur (separable), edges clamped.
    private static ImageBuffer Blurred(ImageBuffer image)
    {
        int w = image.Width, h = image.Height, c = image.Channels;
        var src = image.Pixels;
        var rows = new int[src.Length];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++)
                    rows[(y * w + x) * c + ch] = src[(y * w + Math.Max(x - 1, 0)) * c + ch] + src[(y * w + x) * c + ch] + src[(y * w + Math.Min(x + 1, w - 1)) * c + ch];
        var px = new byte[src.Length];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++)
                    px[(y * w + x) * c + ch] = (byte)((rows[(Math.Max(y - 1, 0) * w + x) * c + ch] + rows[(y * w + x) * c + ch] + rows[(Math.Min(y + 1, h - 1) * w + x) * c + ch] + 4) / 9);
        return new ImageBuffer(w, h, c, px);
    }

    private static IEnumerable<SceneSpec> Scenes(int count, long seed) =>
        ShapeScenes.TrainingScenes(seed).Take(count - count / 5).Concat(ShapeScenes.HeldOutScenes(count / 5, seed));

    private static void AssertReads(SceneSpec spec, ImageBuffer image, string variant)
    {
        var reading = SceneChecker.Check(image);
        var wrong = reading.Mismatches(spec.Description);
        Assert.True(wrong.Count == 0, $"{variant}: {spec} read as {reading}: wrong {string.Join(", ", wrong)}");
        // Without a captioned position the centre must still be found where the shape was drawn
        // (triangles read up to 0.05 x size low: the 1st row percentile cuts into the thin apex).
        Assert.True(Math.Abs(reading.CenterX - spec.CenterX) < 0.02 && Math.Abs(reading.CenterY - spec.CenterY) < 0.03,
            $"{variant}: {spec} centre read as ({reading.CenterX:0.000}, {reading.CenterY:0.000})");
    }

    [Fact]
    public void ReadsEveryDrawnSceneCleanNoisyAndBlurred()
    {
        int i = 0;
        foreach (var spec in Scenes(500, seed: 21))
        {
            // Every scene clean, and each also under one of three degradations in turn.
            var image = ShapeScenes.Draw(spec);
            AssertReads(spec, image, "clean");
            switch (i % 3)
            {
                case 0: AssertReads(spec, Noisy(image, i), "noise"); break;
                case 1: AssertReads(spec, Blurred(image), "blur"); break;
                default: AssertReads(spec, Noisy(Blurred(image), i), "blur+noise"); break;
            }
            i++;
        }
    }

    [Theory]
    [InlineData(64)]
    [InlineData(256)]
    public void ReadsScenesAtOtherResolutions(int size)
    {
        int i = 0;
        foreach (var spec in Scenes(size == 64 ? 200 : 40, seed: size))
        {
            var image = ShapeScenes.Draw(spec, size);
            AssertReads(spec, image, $"{size} clean");
            AssertReads(spec, Noisy(Blurred(image), i++), $"{size} blur+noise");
        }
    }

    // A linear lighting gradient over the whole image, up to +-amplitude per channel at the corners.
    private static ImageBuffer Lit(ImageBuffer image, int amplitude, long seed)
    {
        var rng = new ScenePrng(seed, stream: 98);
        float gx = rng.NextFloat(-1f, 1f), gy = rng.NextFloat(-1f, 1f);
        int w = image.Width, h = image.Height;
        var px = (byte[])image.Pixels.Clone();
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int g = (int)MathF.Round(amplitude * (gx * (2f * x / (w - 1) - 1f) + gy * (2f * y / (h - 1) - 1f)) / 2f);
                for (int c = 0; c < 3; c++) px[(y * w + x) * 3 + c] = (byte)Math.Clamp(px[(y * w + x) * 3 + c] + g, 0, 255);
            }
        return new ImageBuffer(w, h, 3, px);
    }

    [Fact]
    public void ReadsScenesUnderLightingGradientsAndSoftEdges()
    {
        // Yellow and orange are 71 apart: a +-30 gradient turns part of a flat-modelled yellow background orange.
        int i = 0;
        var scenes = ShapeScenes.TrainingScenes(31).Where(s => s.Background is SceneColor.Yellow or SceneColor.Orange).Take(30)
            .Concat(ShapeScenes.TrainingScenes(32).Take(30));
        foreach (var spec in scenes)
        {
            var image = Noisy(Lit(ShapeScenes.Draw(spec), 30, i).GaussianBlur(1.5f), i);
            AssertReads(spec, image, "gradient+gaussian blur+noise");
            i++;
        }
    }

    [Fact]
    public void ReadsTheSmallestShapesOfEveryKindAndColourPair()
    {
        // The hardest cases: minimum size at 64x64 (12.8 px), every combination, blurred and noisy.
        var rng = new ScenePrng(5);
        int i = 0;
        foreach (var combo in ShapeScenes.AllCombinations)
        {
            var position = (ScenePosition)(i % 5);
            var spec = ShapeScenes.Place(new SceneDescription(combo.ShapeColor, combo.Shape, combo.Background, position), rng);
            spec = new SceneSpec(spec.Description, ShapeScenes.MinSize, spec.CenterX, spec.CenterY);
            AssertReads(spec, Noisy(Blurred(ShapeScenes.Draw(spec, 64)), i++), "64 smallest");
        }
    }

    [Fact]
    public void RejectsEveryWrongAttribute()
    {
        var first = ShapeScenes.HeldOutScenes(1, 4)[0];
        var firstImage = ShapeScenes.Draw(first);
        Assert.True(SceneChecker.Matches(first, firstImage));
        Assert.True(SceneChecker.Matches(first.Caption, firstImage));
        var otherColor = ScenePalette.Colors.First(c => c != first.ShapeColor && c != first.Background);
        Assert.False(SceneChecker.Matches(new SceneDescription(otherColor, first.Shape, first.Background, first.Position), firstImage));
        Assert.False(SceneChecker.Matches(new SceneDescription(otherColor, first.Shape, first.Background).Caption, firstImage));
        foreach (var spec in Scenes(50, seed: 4))
        {
            var image = Noisy(Blurred(ShapeScenes.Draw(spec)), 1);
            var reading = SceneChecker.Check(image);
            var d = spec.Description;
            Assert.True(reading.Matches(d));
            Assert.True(reading.Matches(d.WithoutPosition()));
            foreach (var c in ScenePalette.Colors)
            {
                if (c != d.ShapeColor && c != d.Background)
                {
                    var other = new SceneDescription(c, d.Shape, d.Background, d.Position);
                    Assert.Equal(["shape color"], reading.Mismatches(other));
                }
                if (c != d.Background && c != d.ShapeColor)
                    Assert.Equal(["background"], reading.Mismatches(new SceneDescription(d.ShapeColor, d.Shape, c, d.Position)));
            }
            // Swapped colours are wrong on both counts.
            Assert.Equal(["background", "shape color"], reading.Mismatches(new SceneDescription(d.Background, d.Shape, d.ShapeColor, d.Position)));
            foreach (var k in ScenePalette.Kinds.Where(k => k != d.Shape))
                Assert.Equal(["shape"], reading.Mismatches(new SceneDescription(d.ShapeColor, k, d.Background, d.Position)));
            if (d.Position is { } p)
                foreach (var q in ScenePalette.Positions.Where(q => q != p))
                    Assert.Equal(["position"], reading.Mismatches(new SceneDescription(d.ShapeColor, d.Shape, d.Background, q)));
        }
    }

    [Fact]
    public void FindsNoShapeOnAPlainOrNoisyBackground()
    {
        foreach (var color in ScenePalette.Colors)
        {
            var (r, g, b) = ScenePalette.ToRgb(color);
            var px = new byte[64 * 64 * 3];
            for (int i = 0; i < px.Length; i += 3) (px[i], px[i + 1], px[i + 2]) = (r, g, b);
            var reading = SceneChecker.Check(Noisy(new ImageBuffer(64, 64, 3, px), (long)color));
            Assert.Equal(color, reading.Background);
            Assert.False(reading.ShapeFound);
            Assert.Null(reading.Description);
            var other = color == SceneColor.Red ? SceneColor.Blue : SceneColor.Red;
            Assert.Equal(["no shape"], reading.Mismatches(new SceneDescription(other, ShapeKind.Circle, color)));
        }
    }

    [Fact]
    public void ReportsMeasurementsNearTheirIdealValues()
    {
        SceneReading Read(ShapeKind kind) => SceneChecker.Check(ShapeScenes.Draw(
            new SceneSpec(new SceneDescription(SceneColor.Yellow, kind, SceneColor.Purple, ScenePosition.Center), 0.39f, 0.5f, 0.5f)));
        var circle = Read(ShapeKind.Circle);
        var square = Read(ShapeKind.Square);
        var triangle = Read(ShapeKind.Triangle);
        Assert.InRange(circle.MomentRatio, 0.64, 0.69);
        Assert.InRange(square.MomentRatio, 0.97, 1.01);
        Assert.InRange(triangle.MomentRatio, 0.77, 0.83);
        Assert.InRange(triangle.Skewness, -0.6, -0.53);
        Assert.InRange(Math.Abs(circle.Skewness) + Math.Abs(square.Skewness), 0, 0.02);
        Assert.InRange(circle.Fill, 0.76, 0.81);
        Assert.InRange(triangle.Fill, 0.47, 0.53);
        Assert.InRange(circle.Area, 0.785 * 0.39 * 0.39 * 0.97, 0.785 * 0.39 * 0.39 * 1.03);
        Assert.All(new[] { circle, square, triangle }, r =>
        {
            Assert.Equal(1.0, r.BackgroundAgreement);
            Assert.Equal(1.0, r.ShapeColorAgreement);
            Assert.True(r.ShapeMargin > 0.5, r.ToString());
            Assert.InRange(r.PositionMargin, 0.1, CenterRegionForTest);
        });
    }

    private const double CenterRegionForTest = SceneChecker.CenterRegion;

    [Fact]
    public void ScoresCountEveryAttribute()
    {
        var scenes = ShapeScenes.HeldOutScenes(12, 9);
        var blank = new ImageBuffer(64, 64, 3); // all (0, 0, 0): a black background and no shape
        var results = scenes.Select((s, i) => (s.Description, i switch
        {
            0 => blank,
            // Scene 1 is drawn as scene 2 (a different combination: another colour or kind, maybe both).
            1 => ShapeScenes.Draw(new SceneSpec(scenes[2].Description, scenes[1].Size, scenes[1].CenterX, scenes[1].CenterY), 64),
            _ => ShapeScenes.Draw(s, 64),
        })).ToArray();
        var score = SceneChecker.Score(results);
        Assert.Equal(12, score.Total);
        Assert.Equal(10, score.Correct);
        Assert.Equal(1, score.NoShape);
        Assert.Equal(10.0 / 12, score.Rate);
        Assert.Equal(scenes.Count(s => s.Position is not null), score.PositionChecked);
        Assert.Equal(score.PositionChecked - (scenes[0].Position is null ? 0 : 1), score.PositionCorrect);
        var one = SceneChecker.Check(results[1].Item2).Mismatches(scenes[1].Description);
        Assert.NotEmpty(one);
        Assert.Equal(12 - 1 - (one.Contains("shape color") ? 1 : 0), score.ShapeColorCorrect);
        Assert.Equal(12 - 1 - (one.Contains("shape") ? 1 : 0), score.ShapeCorrect);
        Assert.Equal(12 - (scenes[0].Background == SceneColor.Black ? 0 : 1) - (one.Contains("background") ? 1 : 0), score.BackgroundCorrect);
        Assert.StartsWith("10/12 right (83.3%)", score.ToString());
    }

    [Fact]
    public void AcceptsGrayAndRgbaImagesAndRejectsTinyOnes()
    {
        var spec = new SceneSpec(new SceneDescription(SceneColor.White, ShapeKind.Triangle, SceneColor.Black, ScenePosition.TopRight), 0.3f, 0.75f, 0.25f);
        var rgb = ShapeScenes.Draw(spec);
        var rgba = new byte[128 * 128 * 4];
        for (int i = 0; i < 128 * 128; i++)
        {
            rgba[4 * i] = rgb.Pixels[3 * i];
            rgba[4 * i + 1] = rgb.Pixels[3 * i + 1];
            rgba[4 * i + 2] = rgb.Pixels[3 * i + 2];
            rgba[4 * i + 3] = 255;
        }
        Assert.True(SceneChecker.Matches(spec, new ImageBuffer(128, 128, 4, rgba)));
        Assert.True(SceneChecker.Matches(spec, rgb.ToGrayscale()));
        var e = Assert.Throws<ArgumentException>(() => SceneChecker.Check(new ImageBuffer(8, 8, 3)));
        Assert.Contains("16x16", e.Message);
    }
}
