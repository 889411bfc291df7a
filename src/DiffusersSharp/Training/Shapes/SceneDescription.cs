namespace DiffusersSharp.Training.Shapes;

/// <summary>
/// What a caption says about a scene: shape colour, shape kind, background colour and optionally a position. Its
/// <see cref="Caption"/> is <c>"a {color} {shape} on a {color} background"</c>, followed by <c>", {position}"</c> when a
/// position is given (the article is always "a", as the issue specifies the form). Without a position the scene
/// generator places the shape anywhere (fully inside the image), so a caption without a position claims nothing
/// about where the shape is.
/// </summary>
public sealed record SceneDescription
{
    /// <summary>Creates a description.</summary>
    /// <exception cref="ArgumentException">The shape colour equals the background colour, or a value is not a defined enum member.</exception>
    public SceneDescription(SceneColor shapeColor, ShapeKind shape, SceneColor background, ScenePosition? position = null)
    {
        if (!Enum.IsDefined(shapeColor)) throw new ArgumentException($"Unknown shape colour {shapeColor}.", nameof(shapeColor));
        if (!Enum.IsDefined(shape)) throw new ArgumentException($"Unknown shape kind {shape}.", nameof(shape));
        if (!Enum.IsDefined(background)) throw new ArgumentException($"Unknown background colour {background}.", nameof(background));
        if (position is { } p && !Enum.IsDefined(p)) throw new ArgumentException($"Unknown position {p}.", nameof(position));
        if (shapeColor == background)
            throw new ArgumentException($"The shape colour and the background colour are both {ScenePalette.Name(shapeColor)}; a scene needs two different colours.");
        ShapeColor = shapeColor;
        Shape = shape;
        Background = background;
        Position = position;
    }

    /// <summary>Colour of the shape.</summary>
    public SceneColor ShapeColor { get; }

    /// <summary>Kind of shape.</summary>
    public ShapeKind Shape { get; }

    /// <summary>Colour of the background.</summary>
    public SceneColor Background { get; }

    /// <summary>Where the shape is, or null when the caption does not say.</summary>
    public ScenePosition? Position { get; }

    /// <summary>The caption, e.g. <c>"a red circle on a blue background, top left"</c>.</summary>
    public string Caption =>
        $"a {ScenePalette.Name(ShapeColor)} {ScenePalette.Name(Shape)} on a {ScenePalette.Name(Background)} background"
        + (Position is { } p ? ", " + ScenePalette.Name(p) : "");

    /// <summary>The same description without a position.</summary>
    public SceneDescription WithoutPosition() => new(ShapeColor, Shape, Background);

    /// <summary>Parses a caption of the form <see cref="Caption"/> produces ("an" is accepted for "a"; case and outer spaces are ignored).</summary>
    /// <exception cref="FormatException">The text is not such a caption; the message says which part is wrong.</exception>
    public static SceneDescription Parse(string caption)
    {
        ArgumentNullException.ThrowIfNull(caption);
        string text = caption.Trim().ToLowerInvariant();
        ScenePosition? position = null;
        int comma = text.IndexOf(',');
        if (comma >= 0)
        {
            string where = text[(comma + 1)..].Trim();
            if (!ScenePalette.TryParsePosition(where, out var p))
                throw new FormatException($"Caption \"{caption}\": unknown position \"{where}\" (expected top left, top right, bottom left, bottom right or center).");
            position = p;
            text = text[..comma].TrimEnd();
        }
        var w = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (w.Length != 7 || w[0] is not ("a" or "an") || w[3] != "on" || w[4] is not ("a" or "an") || w[6] != "background")
            throw new FormatException($"Caption \"{caption}\" is not of the form \"a {{color}} {{shape}} on a {{color}} background[, {{position}}]\".");
        if (!ScenePalette.TryParseColor(w[1], out var shapeColor))
            throw new FormatException($"Caption \"{caption}\": unknown shape colour \"{w[1]}\".");
        if (!ScenePalette.TryParseKind(w[2], out var kind))
            throw new FormatException($"Caption \"{caption}\": unknown shape \"{w[2]}\" (expected circle, square or triangle).");
        if (!ScenePalette.TryParseColor(w[5], out var background))
            throw new FormatException($"Caption \"{caption}\": unknown background colour \"{w[5]}\".");
        if (shapeColor == background)
            throw new FormatException($"Caption \"{caption}\": the shape and the background have the same colour.");
        return new SceneDescription(shapeColor, kind, background, position);
    }

    /// <inheritdoc/>
    public override string ToString() => Caption;
}
