namespace DiffusersSharp.Training.Shapes;

/// <summary>
/// One drawable scene: a <see cref="SceneDescription"/> plus the exact geometry, in fractions of the image side so the
/// same scene draws at any resolution. <see cref="Size"/> is the side of the shape's bounding box (circle diameter,
/// square side, triangle base and height); (<see cref="CenterX"/>, <see cref="CenterY"/>) is the centre of that box,
/// x to the right and y down from the top-left corner.
/// </summary>
public sealed record SceneSpec
{
    /// <summary>Creates a scene.</summary>
    /// <exception cref="ArgumentException">The size is not in (0, 1], or the shape does not lie fully inside the image.</exception>
    public SceneSpec(SceneDescription description, float size, float centerX, float centerY)
    {
        ArgumentNullException.ThrowIfNull(description);
        if (!(size > 0f && size <= 1f)) throw new ArgumentException($"Size must be in (0, 1] of the image side, got {size}.", nameof(size));
        float h = size / 2f;
        if (!(centerX - h >= 0f && centerX + h <= 1f && centerY - h >= 0f && centerY + h <= 1f))
            throw new ArgumentException($"A shape of size {size} centred at ({centerX}, {centerY}) does not fit inside the image.");
        Description = description;
        Size = size;
        CenterX = centerX;
        CenterY = centerY;
    }

    /// <summary>What the caption says.</summary>
    public SceneDescription Description { get; }

    /// <summary>Side of the shape's bounding box, as a fraction of the image side.</summary>
    public float Size { get; }

    /// <summary>Horizontal centre of the bounding box, as a fraction of the image width.</summary>
    public float CenterX { get; }

    /// <summary>Vertical centre of the bounding box, as a fraction of the image height (0 = top).</summary>
    public float CenterY { get; }

    /// <summary>Colour of the shape.</summary>
    public SceneColor ShapeColor => Description.ShapeColor;

    /// <summary>Kind of shape.</summary>
    public ShapeKind Shape => Description.Shape;

    /// <summary>Colour of the background.</summary>
    public SceneColor Background => Description.Background;

    /// <summary>The captioned position, or null when the caption has none (the shape may then be anywhere).</summary>
    public ScenePosition? Position => Description.Position;

    /// <summary>The caption (see <see cref="SceneDescription.Caption"/>).</summary>
    public string Caption => Description.Caption;

    /// <inheritdoc/>
    public override string ToString() => $"{Caption} (size {Size:0.###}, centre {CenterX:0.###},{CenterY:0.###})";
}
