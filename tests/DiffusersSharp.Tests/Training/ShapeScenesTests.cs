using System.Text.RegularExpressions;
using DiffusersSharp.Training.Shapes;

namespace DiffusersSharp.Tests.Training;

public sealed class ShapeScenesTests
{
    private static readonly Regex CaptionForm = new(
        "^a (red|green|blue|yellow|white|black|orange|purple) (circle|square|triangle) on a (red|green|blue|yellow|white|black|orange|purple) background" +
        "(, (top left|top right|bottom left|bottom right|center))?$");

    [Fact]
    public void PrngMatchesThePcg32ReferenceOutputs()
    {
        // pcg32-demo.c, pcg32_srandom_r(&rng, 42, 54), round 1.
        var rng = ScenePrng.FromPcgSeed(42, 54);
        uint[] expected = [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e];
        foreach (uint e in expected) Assert.Equal(e, rng.NextUInt());
    }

    [Fact]
    public void PrngRangesAreUniformAndInBounds()
    {
        var rng = new ScenePrng(3);
        var counts = new int[6];
        for (int i = 0; i < 6000; i++) counts[rng.NextInt(6)]++;
        Assert.All(counts, c => Assert.InRange(c, 880, 1120));
        for (int i = 0; i < 1000; i++) Assert.InRange(rng.NextFloat(0.2f, 0.4f), 0.2f, 0.4f);
        Assert.Throws<ArgumentOutOfRangeException>(() => rng.NextInt(0));
    }

    [Fact]
    public void CaptionsHaveTheExactForm()
    {
        Assert.Equal("a red circle on a blue background", new SceneDescription(SceneColor.Red, ShapeKind.Circle, SceneColor.Blue).Caption);
        Assert.Equal("a orange triangle on a black background, bottom right",
            new SceneDescription(SceneColor.Orange, ShapeKind.Triangle, SceneColor.Black, ScenePosition.BottomRight).Caption);
        Assert.Equal("a white square on a purple background, center",
            new SceneDescription(SceneColor.White, ShapeKind.Square, SceneColor.Purple, ScenePosition.Center).Caption);
        foreach (var scene in ShapeScenes.TrainingScenes(5).Take(500).Concat(ShapeScenes.HeldOutScenes(100, 5)))
        {
            Assert.Matches(CaptionForm, scene.Caption);
            Assert.Equal(scene.Description, SceneDescription.Parse(scene.Caption));
        }
        Assert.Equal(new SceneDescription(SceneColor.Orange, ShapeKind.Square, SceneColor.Red, ScenePosition.TopLeft),
            SceneDescription.Parse("  An Orange square on a red background,  top left "));
    }

    [Fact]
    public void BadDescriptionsAndCaptionsAreRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => new SceneDescription(SceneColor.Red, ShapeKind.Circle, SceneColor.Red));
        Assert.Contains("red", e.Message);
        Assert.Throws<ArgumentException>(() => new SceneDescription((SceneColor)9, ShapeKind.Circle, SceneColor.Red));
        Assert.Contains("pink", Assert.Throws<FormatException>(() => SceneDescription.Parse("a pink circle on a blue background")).Message);
        Assert.Contains("hexagon", Assert.Throws<FormatException>(() => SceneDescription.Parse("a red hexagon on a blue background")).Message);
        Assert.Contains("middle", Assert.Throws<FormatException>(() => SceneDescription.Parse("a red circle on a blue background, middle")).Message);
        Assert.Throws<FormatException>(() => SceneDescription.Parse("a red circle on blue"));
        Assert.Throws<FormatException>(() => SceneDescription.Parse("a red circle on a red background"));
        var d = new SceneDescription(SceneColor.Red, ShapeKind.Circle, SceneColor.Blue);
        Assert.Throws<ArgumentException>(() => new SceneSpec(d, 0f, 0.5f, 0.5f));
        Assert.Throws<ArgumentException>(() => new SceneSpec(d, 0.3f, 0.1f, 0.5f));
    }

    [Fact]
    public void ScenesAreDeterministicForASeed()
    {
        var a = ShapeScenes.TrainingScenes(42).Take(200).ToArray();
        var b = ShapeScenes.TrainingScenes(42).Take(200).ToArray();
        Assert.Equal(a, b);
        Assert.NotEqual(a, ShapeScenes.TrainingScenes(43).Take(200).ToArray());
        Assert.Equal(ShapeScenes.HeldOutScenes(50, 1), ShapeScenes.HeldOutScenes(50, 1));
        Assert.NotEqual(ShapeScenes.HeldOutScenes(50, 1), ShapeScenes.HeldOutScenes(50, 2));
        Assert.Equal(ShapeScenes.HeldOutScenes(50, 1).Select(s => s.Caption), ShapeScenes.HeldOutCaptions(50, 1));
        Assert.Equal(ShapeScenes.Draw(a[0]).Pixels, ShapeScenes.Draw(b[0]).Pixels);
    }

    [Fact]
    public void SplitIsFixedAndEveryPartStillAppearsInTraining()
    {
        Assert.Equal(168, ShapeScenes.AllCombinations.Count);
        Assert.Equal(168, ShapeScenes.AllCombinations.Distinct().Count());
        var held = ShapeScenes.HeldOutCombinations;
        Assert.Equal(16, held.Count);
        Assert.Equal(16, held.Distinct().Count());
        Assert.All(held, h => Assert.NotEqual(h.ShapeColor, h.Background));
        Assert.Equal(152, ShapeScenes.TrainingCombinations.Count);
        var train = ShapeScenes.TrainingCombinations;
        // Every pair of parts of a held-out combination is seen in training, so held-out captions test composition.
        foreach (var h in held)
        {
            Assert.Contains(train, t => t.ShapeColor == h.ShapeColor && t.Shape == h.Shape);
            Assert.Contains(train, t => t.ShapeColor == h.ShapeColor && t.Background == h.Background);
            Assert.Contains(train, t => t.Shape == h.Shape && t.Background == h.Background);
        }
        Assert.True(ShapeScenes.IsHeldOut(new SceneDescription(SceneColor.Red, ShapeKind.Circle, SceneColor.Blue, ScenePosition.Center)));
        Assert.False(ShapeScenes.IsHeldOut(new SceneDescription(SceneColor.Blue, ShapeKind.Circle, SceneColor.Red)));
    }

    [Fact]
    public void TrainingNeverShowsHeldOutCombinationsButShowsEverythingElse()
    {
        var scenes = ShapeScenes.TrainingScenes(11).Take(4000).ToArray();
        Assert.DoesNotContain(scenes, ShapeScenes.IsHeldOut);
        var seen = scenes.Select(s => new SceneCombination(s.ShapeColor, s.Shape, s.Background)).ToHashSet();
        Assert.Equal(ShapeScenes.TrainingCombinations.ToHashSet(), seen);
        foreach (var c in ScenePalette.Colors)
        {
            Assert.Contains(scenes, s => s.ShapeColor == c);
            Assert.Contains(scenes, s => s.Background == c);
        }
        foreach (var k in ScenePalette.Kinds) Assert.Contains(scenes, s => s.Shape == k);
        foreach (var p in ScenePalette.Positions) Assert.Contains(scenes, s => s.Position == p);
        Assert.InRange(scenes.Count(s => s.Position is null), 4000 / 6 - 100, 4000 / 6 + 100);

        var heldOut = ShapeScenes.HeldOutScenes(50, 3);
        Assert.All(heldOut, s => Assert.True(ShapeScenes.IsHeldOut(s)));
        var perCombo = heldOut.GroupBy(s => new SceneCombination(s.ShapeColor, s.Shape, s.Background)).ToArray();
        Assert.Equal(16, perCombo.Length);
        Assert.All(perCombo, g => Assert.InRange(g.Count(), 3, 4));
    }

    [Fact]
    public void PlacementKeepsShapesInsideTheImageAndTheirQuadrant()
    {
        foreach (var s in ShapeScenes.TrainingScenes(8).Take(3000))
        {
            Assert.InRange(s.Size, ShapeScenes.MinSize, ShapeScenes.MaxSize);
            float h = s.Size / 2, m = ShapeScenes.Margin - 1e-6f;
            float left = s.CenterX - h, right = s.CenterX + h, top = s.CenterY - h, bottom = s.CenterY + h;
            Assert.True(left >= m && top >= m && right <= 1 - m && bottom <= 1 - m, s.ToString());
            switch (s.Position)
            {
                case ScenePosition.Center:
                    Assert.True(MathF.Abs(s.CenterX - 0.5f) <= ShapeScenes.CenterJitter && MathF.Abs(s.CenterY - 0.5f) <= ShapeScenes.CenterJitter, s.ToString());
                    break;
                case ScenePosition.TopLeft: Assert.True(right <= 0.5f - m && bottom <= 0.5f - m, s.ToString()); break;
                case ScenePosition.TopRight: Assert.True(left >= 0.5f + m && bottom <= 0.5f - m, s.ToString()); break;
                case ScenePosition.BottomLeft: Assert.True(right <= 0.5f - m && top >= 0.5f + m, s.ToString()); break;
                case ScenePosition.BottomRight: Assert.True(left >= 0.5f + m && top >= 0.5f + m, s.ToString()); break;
            }
        }
    }

    [Fact]
    public void DrawingFillsTheShapeAndBlendsEdgesByCoverage()
    {
        // A square of side 32 px spanning [48.5, 80.5) on both axes: edge pixels 48 and 80 are half covered.
        var spec = new SceneSpec(new SceneDescription(SceneColor.Red, ShapeKind.Square, SceneColor.Blue), 0.25f, 64.5f / 128, 64.5f / 128);
        var img = ShapeScenes.Draw(spec);
        Assert.Equal((128, 128, 3), (img.Width, img.Height, img.Channels));
        byte[] Px(int x, int y) => img.Pixels[(3 * (y * 128 + x))..(3 * (y * 128 + x) + 3)];
        Assert.Equal(new byte[] { 40, 80, 220 }, Px(0, 0));
        Assert.Equal(new byte[] { 40, 80, 220 }, Px(47, 64));
        Assert.Equal(new byte[] { 220, 40, 40 }, Px(64, 64));
        Assert.Equal(new byte[] { 220, 40, 40 }, Px(49, 49));
        Assert.Equal(new byte[] { 130, 60, 130 }, Px(48, 64)); // (40*8 + 220*8 + 8) / 16
        Assert.Equal(new byte[] { 85, 70, 175 }, Px(80, 80)); // a quarter covered: (40*12 + 220*4 + 8) / 16
        Assert.Equal(31 * 31, Enumerable.Range(0, 128 * 128).Count(i => img.Pixels[3 * i] == 220)); // columns and rows 49..79

        // A circle of diameter 64 at the centre covers ~pi/4 of its box; a triangle half of it.
        double Covered(ShapeKind kind)
        {
            var s = new SceneSpec(new SceneDescription(SceneColor.White, kind, SceneColor.Black), 0.5f, 0.5f, 0.5f);
            var im = ShapeScenes.Draw(s);
            return Enumerable.Range(0, 128 * 128).Sum(i => (im.Pixels[3 * i] - 20) / 225.0) / (64 * 64);
        }
        Assert.InRange(Covered(ShapeKind.Circle), Math.PI / 4 - 0.005, Math.PI / 4 + 0.005);
        Assert.InRange(Covered(ShapeKind.Triangle), 0.495, 0.505);
        Assert.InRange(Covered(ShapeKind.Square), 0.9999, 1.0001);
    }

    [Fact]
    public void BoxMaskCoversTheShapeWithAMargin()
    {
        var spec = new SceneSpec(new SceneDescription(SceneColor.Red, ShapeKind.Circle, SceneColor.Blue), 0.25f, 0.5f, 0.5f);
        var mask = SceneRenderer.BoxMask(spec, 128, grow: 0.05f);
        Assert.Equal(1, mask.Channels);
        int side = (int)Math.Round((0.25 + 0.1) * 128);
        Assert.InRange(mask.Pixels.Count(b => b == 255), (side - 1) * (side - 1), (side + 1) * (side + 1));
        Assert.Equal(255, mask.Pixels[64 * 128 + 64]);
        Assert.Equal(0, mask.Pixels[0]);
        var img = ShapeScenes.Draw(spec);
        for (int i = 0; i < 128 * 128; i++)
            if (img.Pixels[3 * i] != 40) Assert.Equal(255, mask.Pixels[i]);
    }
}
