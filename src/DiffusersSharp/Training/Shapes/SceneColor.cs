namespace DiffusersSharp.Training.Shapes;

/// <summary>The eight colours of the shape scenes (shape and background); see <see cref="ScenePalette"/> for their RGB values.</summary>
public enum SceneColor
{
    /// <summary>RGB (220, 40, 40).</summary>
    Red,
    /// <summary>RGB (40, 170, 60).</summary>
    Green,
    /// <summary>RGB (40, 80, 220).</summary>
    Blue,
    /// <summary>RGB (240, 210, 40).</summary>
    Yellow,
    /// <summary>RGB (245, 245, 245).</summary>
    White,
    /// <summary>RGB (20, 20, 20).</summary>
    Black,
    /// <summary>RGB (245, 140, 30).</summary>
    Orange,
    /// <summary>RGB (140, 60, 190).</summary>
    Purple,
}

/// <summary>The kinds of shape drawn in a scene.</summary>
public enum ShapeKind
{
    /// <summary>A disc whose diameter is the scene size.</summary>
    Circle,
    /// <summary>An axis-aligned square whose side is the scene size.</summary>
    Square,
    /// <summary>An upright isosceles triangle (apex up) whose base and height are both the scene size.</summary>
    Triangle,
}

/// <summary>Where the shape sits: the quadrant that holds its centre, or the middle of the image.</summary>
public enum ScenePosition
{
    /// <summary>"top left": the shape lies inside the top-left quadrant.</summary>
    TopLeft,
    /// <summary>"top right".</summary>
    TopRight,
    /// <summary>"bottom left".</summary>
    BottomLeft,
    /// <summary>"bottom right".</summary>
    BottomRight,
    /// <summary>"center": the shape is centred near the middle of the image.</summary>
    Center,
}

/// <summary>Names and RGB values of <see cref="SceneColor"/>, <see cref="ShapeKind"/> and <see cref="ScenePosition"/> as captions spell them.</summary>
public static class ScenePalette
{
    private static readonly byte[] Rgb =
    [
        220, 40, 40, 40, 170, 60, 40, 80, 220, 240, 210, 40,
        245, 245, 245, 20, 20, 20, 245, 140, 30, 140, 60, 190,
    ];

    private static readonly string[] ColorNames = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"];
    private static readonly string[] KindNames = ["circle", "square", "triangle"];
    private static readonly string[] PositionNames = ["top left", "top right", "bottom left", "bottom right", "center"];

    /// <summary>All colours, in enum order.</summary>
    public static IReadOnlyList<SceneColor> Colors { get; } = Enum.GetValues<SceneColor>();

    /// <summary>All shape kinds, in enum order.</summary>
    public static IReadOnlyList<ShapeKind> Kinds { get; } = Enum.GetValues<ShapeKind>();

    /// <summary>All positions, in enum order.</summary>
    public static IReadOnlyList<ScenePosition> Positions { get; } = Enum.GetValues<ScenePosition>();

    /// <summary>The RGB value a colour is drawn with.</summary>
    public static (byte R, byte G, byte B) ToRgb(SceneColor color)
    {
        int i = 3 * CheckColor(color);
        return (Rgb[i], Rgb[i + 1], Rgb[i + 2]);
    }

    /// <summary>The caption word for a colour ("red", ...).</summary>
    public static string Name(SceneColor color) => ColorNames[CheckColor(color)];

    /// <summary>The caption word for a shape kind ("circle", "square", "triangle").</summary>
    public static string Name(ShapeKind kind) =>
        (uint)kind < (uint)KindNames.Length ? KindNames[(int)kind] : throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown shape kind.");

    /// <summary>The caption words for a position ("top left", ..., "center").</summary>
    public static string Name(ScenePosition position) =>
        (uint)position < (uint)PositionNames.Length ? PositionNames[(int)position] : throw new ArgumentOutOfRangeException(nameof(position), position, "Unknown position.");

    /// <summary>The palette colour nearest (Euclidean RGB) to a pixel value; ties go to the earlier colour.</summary>
    public static SceneColor Nearest(int r, int g, int b) => (SceneColor)NearestIndex(r, g, b);

    /// <summary>The palette colour nearest to a mean colour.</summary>
    public static SceneColor Nearest(double r, double g, double b)
    {
        int best = 0;
        double bestD = double.MaxValue;
        for (int c = 0; c < 8; c++)
        {
            double dr = r - Rgb[3 * c], dg = g - Rgb[3 * c + 1], db = b - Rgb[3 * c + 2];
            double d = dr * dr + dg * dg + db * db;
            if (d < bestD) { bestD = d; best = c; }
        }
        return (SceneColor)best;
    }

    internal static int NearestIndex(int r, int g, int b)
    {
        int best = 0, bestD = int.MaxValue;
        for (int c = 0; c < 8; c++)
        {
            int dr = r - Rgb[3 * c], dg = g - Rgb[3 * c + 1], db = b - Rgb[3 * c + 2];
            int d = dr * dr + dg * dg + db * db;
            if (d < bestD) { bestD = d; best = c; }
        }
        return best;
    }

    internal static bool TryParseColor(string word, out SceneColor color) => TryParse(ColorNames, word, out color);

    internal static bool TryParseKind(string word, out ShapeKind kind) => TryParse(KindNames, word, out kind);

    internal static bool TryParsePosition(string words, out ScenePosition position) => TryParse(PositionNames, words, out position);

    private static bool TryParse<T>(string[] names, string word, out T value) where T : struct, Enum
    {
        int i = Array.IndexOf(names, word);
        value = i >= 0 ? (T)(object)i : default;
        return i >= 0;
    }

    private static int CheckColor(SceneColor color) =>
        (uint)color < 8u ? (int)color : throw new ArgumentOutOfRangeException(nameof(color), color, "Unknown scene colour.");
}
