using DiffusersSharp.Images;

namespace DiffusersSharp.Training.Shapes;

/// <summary>A (shape colour, shape kind, background colour) triple: the unit of the train / held-out split.</summary>
public readonly record struct SceneCombination(SceneColor ShapeColor, ShapeKind Shape, SceneColor Background)
{
    /// <inheritdoc/>
    public override string ToString() => $"{ScenePalette.Name(ShapeColor)} {ScenePalette.Name(Shape)} on {ScenePalette.Name(Background)}";
}

/// <summary>
/// Shape scenes drawn on the fly: one circle, square or upright triangle on a plain background, with captions
/// "a {color} {shape} on a {color} background[, {position}]". Everything is deterministic for a seed (<see cref="ScenePrng"/>).
/// <para>Placement (fractions of the image side): sizes are uniform in [<see cref="MinSize"/>, <see cref="MaxSize"/>).
/// A quadrant position puts the whole shape inside that quadrant, at least <see cref="Margin"/> from the image edges and
/// the midlines, its centre within <see cref="QuadrantJitter"/> of the quadrant centre (0.25 / 0.75). "center" puts the
/// centre within <see cref="CenterJitter"/> of (0.5, 0.5). No position (one scene in six): the shape is anywhere, fully
/// inside the image with the same edge margin, so an unpositioned caption teaches nothing about location.</para>
/// <para>Split: the 16 <see cref="HeldOutCombinations"/> (16 of the 168 combinations, two per shape colour and two per
/// background) never occur in <see cref="TrainingScenes"/>; each of their (colour, shape), (colour, background) and
/// (shape, background) pairs still occurs in training, so held-out captions test composition of seen parts.</para>
/// </summary>
public static class ShapeScenes
{
    /// <summary>Image side the scenes are made for (they draw at any side, see <see cref="Draw"/>).</summary>
    public const int DefaultImageSize = 128;

    /// <summary>Smallest shape size, as a fraction of the image side.</summary>
    public const float MinSize = 0.2f;

    /// <summary>Largest shape size (exclusive), as a fraction of the image side.</summary>
    public const float MaxSize = 0.4f;

    /// <summary>Least distance between the shape and the image edges (and the midlines, for quadrant positions).</summary>
    public const float Margin = 0.03f;

    /// <summary>Largest offset of a quadrant-positioned shape's centre from its quadrant centre (less for large shapes).</summary>
    public const float QuadrantJitter = 0.06f;

    /// <summary>Largest offset of a "center" shape's centre from the image centre.</summary>
    public const float CenterJitter = 0.05f;

    /// <summary>All 168 combinations (8 shape colours x 3 shapes x 7 other background colours).</summary>
    public static IReadOnlyList<SceneCombination> AllCombinations { get; } =
        (from c in ScenePalette.Colors from k in ScenePalette.Kinds from b in ScenePalette.Colors where b != c
         select new SceneCombination(c, k, b)).ToArray();

    /// <summary>The held-out combinations: a fixed, hand-picked list (see the class remarks).</summary>
    public static IReadOnlyList<SceneCombination> HeldOutCombinations { get; } =
    [
        new(SceneColor.Red, ShapeKind.Circle, SceneColor.Blue),
        new(SceneColor.Red, ShapeKind.Triangle, SceneColor.White),
        new(SceneColor.Green, ShapeKind.Square, SceneColor.Black),
        new(SceneColor.Green, ShapeKind.Circle, SceneColor.Yellow),
        new(SceneColor.Blue, ShapeKind.Triangle, SceneColor.Orange),
        new(SceneColor.Blue, ShapeKind.Square, SceneColor.Green),
        new(SceneColor.Yellow, ShapeKind.Circle, SceneColor.Purple),
        new(SceneColor.Yellow, ShapeKind.Triangle, SceneColor.Black),
        new(SceneColor.White, ShapeKind.Square, SceneColor.Red),
        new(SceneColor.White, ShapeKind.Triangle, SceneColor.Green),
        new(SceneColor.Black, ShapeKind.Circle, SceneColor.Orange),
        new(SceneColor.Black, ShapeKind.Square, SceneColor.White),
        new(SceneColor.Orange, ShapeKind.Triangle, SceneColor.Blue),
        new(SceneColor.Orange, ShapeKind.Circle, SceneColor.Purple),
        new(SceneColor.Purple, ShapeKind.Square, SceneColor.Yellow),
        new(SceneColor.Purple, ShapeKind.Triangle, SceneColor.Red),
    ];

    /// <summary>The 152 combinations training draws from.</summary>
    public static IReadOnlyList<SceneCombination> TrainingCombinations { get; } =
        AllCombinations.Where(c => !HeldOutCombinations.Contains(c)).ToArray();

    /// <summary>Whether a combination is held out of training.</summary>
    public static bool IsHeldOut(SceneCombination combination) => HeldOutCombinations.Contains(combination);

    /// <summary>Whether a description's combination is held out of training (the position does not matter).</summary>
    public static bool IsHeldOut(SceneDescription description)
    {
        ArgumentNullException.ThrowIfNull(description);
        return IsHeldOut(new SceneCombination(description.ShapeColor, description.Shape, description.Background));
    }

    /// <summary>Whether a scene's combination is held out of training.</summary>
    public static bool IsHeldOut(SceneSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return IsHeldOut(spec.Description);
    }

    /// <summary>
    /// An endless, seed-determined stream of training scenes: a uniform non-held-out combination, then a position
    /// (each of the five, or none, with probability 1/6), then a size and centre as the class remarks describe.
    /// </summary>
    public static IEnumerable<SceneSpec> TrainingScenes(long seed)
    {
        var rng = new ScenePrng(seed, stream: 1);
        var combos = TrainingCombinations;
        while (true)
            yield return Place(combos[rng.NextInt(combos.Count)], rng);
    }

    /// <summary>
    /// <paramref name="count"/> held-out scenes, seed-determined: the held-out combinations in a shuffled order,
    /// reshuffled after each full round (so every combination appears <c>count / 16</c> or one more times), each with a
    /// random position (or none, 1 in 6) and placement.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative.</exception>
    public static IReadOnlyList<SceneSpec> HeldOutScenes(int count, long seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var rng = new ScenePrng(seed, stream: 2);
        var order = HeldOutCombinations.ToArray();
        var scenes = new SceneSpec[count];
        for (int i = 0; i < count; i++)
        {
            if (i % order.Length == 0) rng.Shuffle(order);
            scenes[i] = Place(order[i % order.Length], rng);
        }
        return scenes;
    }

    /// <summary>The captions of <see cref="HeldOutScenes"/> for the same arguments.</summary>
    /// <inheritdoc cref="HeldOutScenes" path="/exception"/>
    public static IReadOnlyList<string> HeldOutCaptions(int count, long seed) =>
        HeldOutScenes(count, seed).Select(s => s.Caption).ToArray();

    /// <summary>A scene for a combination with a random position (or none, 1 in 6), size and centre drawn from <paramref name="rng"/>.</summary>
    public static SceneSpec Place(SceneCombination combination, ScenePrng rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        int p = rng.NextInt(ScenePalette.Positions.Count + 1);
        ScenePosition? position = p < ScenePalette.Positions.Count ? (ScenePosition)p : null;
        return Place(new SceneDescription(combination.ShapeColor, combination.Shape, combination.Background, position), rng);
    }

    /// <summary>A random size and centre for a description, as the class remarks describe.</summary>
    public static SceneSpec Place(SceneDescription description, ScenePrng rng)
    {
        ArgumentNullException.ThrowIfNull(description);
        ArgumentNullException.ThrowIfNull(rng);
        float size = rng.NextFloat(MinSize, MaxSize), half = size / 2f;
        float cx, cy;
        switch (description.Position)
        {
            case null:
                cx = rng.NextFloat(Margin + half, 1f - Margin - half);
                cy = rng.NextFloat(Margin + half, 1f - Margin - half);
                break;
            case ScenePosition.Center:
                cx = 0.5f + rng.NextFloat(-CenterJitter, CenterJitter);
                cy = 0.5f + rng.NextFloat(-CenterJitter, CenterJitter);
                break;
            case var q:
                float j = MathF.Min(QuadrantJitter, 0.25f - half - Margin);
                bool left = q is ScenePosition.TopLeft or ScenePosition.BottomLeft;
                bool top = q is ScenePosition.TopLeft or ScenePosition.TopRight;
                cx = (left ? 0.25f : 0.75f) + rng.NextFloat(-j, j);
                cy = (top ? 0.25f : 0.75f) + rng.NextFloat(-j, j);
                break;
        }
        return new SceneSpec(description, size, cx, cy);
    }

    /// <summary>Draws a scene as a <paramref name="size"/> x <paramref name="size"/> RGB image; see <see cref="SceneRenderer"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is under 16.</exception>
    public static ImageBuffer Draw(SceneSpec spec, int size = DefaultImageSize) => SceneRenderer.Draw(spec, size);
}
