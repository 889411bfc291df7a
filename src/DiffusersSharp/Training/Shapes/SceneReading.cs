namespace DiffusersSharp.Training.Shapes;

/// <summary>
/// What <see cref="SceneChecker.Check"/> read from an image, with the measurements behind it. Shape fields are null
/// when no shape was found (<see cref="ShapeFound"/> false).
/// </summary>
public sealed record SceneReading
{
    /// <summary>Background colour: the most common nearest palette colour of the border pixels.</summary>
    public required SceneColor Background { get; init; }

    /// <summary>Fraction of border pixels whose nearest palette colour is <see cref="Background"/>.</summary>
    public required double BackgroundAgreement { get; init; }

    /// <summary>Whether a shape (a connected region of at least <see cref="SceneChecker.MinShapeArea"/> of the image) was found.</summary>
    public bool ShapeFound => ShapeColor is not null;

    /// <summary>Shape colour: the most common nearest palette colour inside the shape (its edge excluded).</summary>
    public SceneColor? ShapeColor { get; init; }

    /// <summary>Fraction of the shape's inner pixels whose nearest palette colour is <see cref="ShapeColor"/>.</summary>
    public double ShapeColorAgreement { get; init; }

    /// <summary>Shape kind: the nearest prototype in (<see cref="Skewness"/>, <see cref="MomentRatio"/>); see <see cref="SceneChecker"/>.</summary>
    public ShapeKind? Shape { get; init; }

    /// <summary>Normalized feature distance to the second-nearest shape prototype minus that to the nearest (larger = surer).</summary>
    public double ShapeMargin { get; init; }

    /// <summary>Position from the shape centre (see <see cref="CenterX"/>); see <see cref="SceneChecker.CenterRegion"/>.</summary>
    public ScenePosition? Position { get; init; }

    /// <summary>Distance (fraction of the image side) of the shape centre from the nearest boundary between positions.</summary>
    public double PositionMargin { get; init; }

    /// <summary>Shape centre x (fraction of width): middle of the 1st and 99th percentiles of its pixels' columns.</summary>
    public double CenterX { get; init; }

    /// <summary>Shape centre y (fraction of height, 0 = top): middle of the 1st and 99th percentiles of its pixels' rows.</summary>
    public double CenterY { get; init; }

    /// <summary>Shape area as a fraction of the image.</summary>
    public double Area { get; init; }

    /// <summary>Area over bounding-box area (square 1, circle 0.785, triangle 0.5 for large crisp shapes); a diagnostic only.</summary>
    public double Fill { get; init; }

    /// <summary>Skewness of the shape's row coordinates (y down): upright triangle -0.566, circle and square 0.</summary>
    public double Skewness { get; init; }

    /// <summary>mu22 / (mu20 mu02) of the shape's pixels: square 1, upright triangle 0.8, circle 0.667.</summary>
    public double MomentRatio { get; init; }

    /// <summary>The reading as a description (position included), or null without a shape.</summary>
    public SceneDescription? Description =>
        ShapeColor is { } c && Shape is { } k && c != Background ? new SceneDescription(c, k, Background, Position) : null;

    /// <summary>
    /// The attributes of <paramref name="expected"/> this reading contradicts: any of "background", "shape color",
    /// "shape", "position" (checked only when the expectation has one), or just "no shape" when none was found.
    /// </summary>
    public IReadOnlyList<string> Mismatches(SceneDescription expected)
    {
        ArgumentNullException.ThrowIfNull(expected);
        var wrong = new List<string>();
        if (Background != expected.Background) wrong.Add("background");
        if (!ShapeFound)
        {
            wrong.Add("no shape");
            return wrong;
        }
        if (ShapeColor != expected.ShapeColor) wrong.Add("shape color");
        if (Shape != expected.Shape) wrong.Add("shape");
        if (expected.Position is { } p && Position != p) wrong.Add("position");
        return wrong;
    }

    /// <summary>Whether every attribute of <paramref name="expected"/> (position only when it has one) was read.</summary>
    public bool Matches(SceneDescription expected) => Mismatches(expected).Count == 0;

    /// <inheritdoc/>
    public override string ToString() =>
        !ShapeFound
            ? $"no shape on {ScenePalette.Name(Background)} (border agreement {BackgroundAgreement:0.00})"
            : $"{ScenePalette.Name(ShapeColor!.Value)} {ScenePalette.Name(Shape!.Value)} on {ScenePalette.Name(Background)}, {ScenePalette.Name(Position!.Value)}"
              + $" [bg {BackgroundAgreement:0.00}, color {ShapeColorAgreement:0.00}, shape margin {ShapeMargin:0.00}, skew {Skewness:0.00},"
              + $" ratio {MomentRatio:0.00}, fill {Fill:0.00}, centre ({CenterX:0.00}, {CenterY:0.00}) margin {PositionMargin:0.00}, area {Area:0.000}]";
}
