using DiffusersSharp.Images;

namespace DiffusersSharp.Training.Shapes;

/// <summary>
/// Draws <see cref="SceneSpec"/>s: a plain background and one crisp shape whose edge pixels are blended by coverage,
/// measured with 4x4 supersampling (17 levels), so edges are anti-aliased without blur. Pixel (x, y) covers
/// [x, x+1) x [y, y+1) in pixel units; a scene's fractions are multiplied by the image side.
/// </summary>
public static class SceneRenderer
{
    private const int Samples = 4;

    /// <summary>Draws a scene as a <paramref name="size"/> x <paramref name="size"/> RGB image.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is under 16.</exception>
    public static ImageBuffer Draw(SceneSpec spec, int size = ShapeScenes.DefaultImageSize)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 16);
        var (br, bg, bb) = ScenePalette.ToRgb(spec.Background);
        var (fr, fg, fb) = ScenePalette.ToRgb(spec.ShapeColor);
        var px = new byte[size * size * 3];
        for (int i = 0; i < px.Length; i += 3)
        {
            px[i] = br;
            px[i + 1] = bg;
            px[i + 2] = bb;
        }

        float cx = spec.CenterX * size, cy = spec.CenterY * size, half = spec.Size * size / 2f;
        int x0 = Math.Max(0, (int)MathF.Floor(cx - half)), x1 = Math.Min(size - 1, (int)MathF.Ceiling(cx + half));
        int y0 = Math.Max(0, (int)MathF.Floor(cy - half)), y1 = Math.Min(size - 1, (int)MathF.Ceiling(cy + half));
        const float step = 1f / Samples;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++)
            {
                int hits = 0;
                for (int sy = 0; sy < Samples; sy++)
                {
                    float py = y + (sy + 0.5f) * step;
                    for (int sx = 0; sx < Samples; sx++)
                        if (Inside(spec.Shape, x + (sx + 0.5f) * step - cx, py - cy, half)) hits++;
                }
                if (hits == 0) continue;
                int p = 3 * (y * size + x);
                px[p] = Blend(br, fr, hits);
                px[p + 1] = Blend(bg, fg, hits);
                px[p + 2] = Blend(bb, fb, hits);
            }
        return new ImageBuffer(size, size, 3, px);
    }

    /// <summary>
    /// An inpainting mask for a scene (L image, 255 = repaint): the shape's bounding box grown by
    /// <paramref name="grow"/> (fraction of the image side) on every side, clipped to the image.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is under 16 or <paramref name="grow"/> is negative.</exception>
    public static ImageBuffer BoxMask(SceneSpec spec, int size = ShapeScenes.DefaultImageSize, float grow = 0.05f)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 16);
        ArgumentOutOfRangeException.ThrowIfNegative(grow);
        float half = (spec.Size / 2f + grow) * size, cx = spec.CenterX * size, cy = spec.CenterY * size;
        var px = new byte[size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                if (MathF.Abs(x + 0.5f - cx) <= half && MathF.Abs(y + 0.5f - cy) <= half) px[y * size + x] = 255;
        return new ImageBuffer(size, size, 1, px);
    }

    // (dx, dy): offset from the bounding-box centre in pixels, y down.
    private static bool Inside(ShapeKind kind, float dx, float dy, float half) => kind switch
    {
        ShapeKind.Circle => dx * dx + dy * dy <= half * half,
        ShapeKind.Square => MathF.Abs(dx) <= half && MathF.Abs(dy) <= half,
        // Apex at (0, -half), base from (-half, half) to (half, half): the half-width is (dy + half) / 2.
        _ => dy <= half && MathF.Abs(dx) * 2f <= dy + half,
    };

    private static byte Blend(byte background, byte shape, int hits) =>
        (byte)((background * (Samples * Samples - hits) + shape * hits + Samples * Samples / 2) / (Samples * Samples));
}
