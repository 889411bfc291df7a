using System.Globalization;

namespace DiffusersSharp.Training.Shapes;

/// <summary>
/// Tallies checker readings against their captions: the share of images right on every attribute, and per attribute
/// (position only over captions that have one). Fill it with <see cref="Add(SceneDescription, SceneReading)"/> or
/// <see cref="SceneChecker.Score"/>.
/// </summary>
public sealed class SceneScore
{
    /// <summary>Images scored.</summary>
    public int Total { get; private set; }

    /// <summary>Images right on every attribute the caption states.</summary>
    public int Correct { get; private set; }

    /// <summary>Images whose background colour was right.</summary>
    public int BackgroundCorrect { get; private set; }

    /// <summary>Images whose shape colour was right.</summary>
    public int ShapeColorCorrect { get; private set; }

    /// <summary>Images whose shape kind was right.</summary>
    public int ShapeCorrect { get; private set; }

    /// <summary>Images whose caption states a position.</summary>
    public int PositionChecked { get; private set; }

    /// <summary>Of <see cref="PositionChecked"/>, those with the position right.</summary>
    public int PositionCorrect { get; private set; }

    /// <summary>Images in which no shape was found.</summary>
    public int NoShape { get; private set; }

    /// <summary><see cref="Correct"/> / <see cref="Total"/> (0 when empty).</summary>
    public double Rate => Total == 0 ? 0 : (double)Correct / Total;

    /// <summary>Counts one image; returns the reading's mismatches (see <see cref="SceneReading.Mismatches"/>).</summary>
    public IReadOnlyList<string> Add(SceneDescription expected, SceneReading reading)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(reading);
        var wrong = reading.Mismatches(expected);
        Total++;
        if (wrong.Count == 0) Correct++;
        if (!wrong.Contains("background")) BackgroundCorrect++;
        if (!reading.ShapeFound) NoShape++;
        else
        {
            if (!wrong.Contains("shape color")) ShapeColorCorrect++;
            if (!wrong.Contains("shape")) ShapeCorrect++;
        }
        if (expected.Position is not null)
        {
            PositionChecked++;
            if (reading.ShapeFound && !wrong.Contains("position")) PositionCorrect++;
        }
        return wrong;
    }

    /// <summary>E.g. <c>"46/50 right (92.0%): background 50/50, shape color 48/50, shape 47/50, position 38/41, no shape 0"</c>.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Correct}/{Total} right ({100 * Rate:0.0}%): background {BackgroundCorrect}/{Total}, shape color {ShapeColorCorrect}/{Total}, "
        + $"shape {ShapeCorrect}/{Total}, position {PositionCorrect}/{PositionChecked}, no shape {NoShape}");
}
