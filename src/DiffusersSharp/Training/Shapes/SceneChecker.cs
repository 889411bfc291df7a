using DiffusersSharp.Images;

namespace DiffusersSharp.Training.Shapes;

/// <summary>
/// Reads a shape scene back from an image (drawn or generated), for automatic quality checks:
/// <list type="number">
/// <item>Background: the most common nearest palette colour of a border ring (side / 32 pixels wide, at least 1).
/// Its measured colour is modelled as a plane over the image (least squares on the ring pixels of that colour), so
/// smooth shading and gradients in a generated background are not taken for the shape.</item>
/// <item>Shape pixels, first pass: farther from the local background colour than 0.4 x the distance from it to the
/// closest other palette colour; the largest 8-connected region is kept.</item>
/// <item>Shape colour: the most common nearest palette colour of that region's inner pixels (two erosions, fewer when
/// the region is small), which keeps blended edge pixels (e.g. red over blue reads purple) out of the vote.</item>
/// <item>Shape pixels, final: projected on the line from the local background colour to it plus the measured shape offset,
/// more than halfway to the shape colour (an unbiased 50% edge); the largest 8-connected region, which must cover at
/// least <see cref="MinShapeArea"/> of the image.</item>
/// <item>Kind: the nearest of three prototypes in (row skewness / 0.566, (mu22 / (mu20 mu02) - 2/3) / (1/3)):
/// circle (0, 0), square (0, 1), upright triangle (-1, 0.4). Both features are moments, so they are the same at any
/// resolution and barely move with blur, noise or a pixel more or less on the edge.</item>
/// <item>Position: the centre (middle of the 1st and 99th percentiles of the shape's columns and rows, which ignores
/// thin stray parts) is "center" when within <see cref="CenterRegion"/> of the image centre on both axes, else the
/// quadrant it lies in. The generator keeps quadrant shapes at least 0.19 and centred shapes at most 0.05 from the
/// centre, so the 0.12 boundary leaves room for imperfect images.</item>
/// </list>
/// </summary>
public static class SceneChecker
{
    /// <summary>Half the side of the centre square (fraction of the image side) inside which a shape centre reads "center".</summary>
    public const double CenterRegion = 0.12;

    /// <summary>Smallest shape region, as a fraction of the image area, that counts as a shape (the smallest drawn triangle covers 0.02).</summary>
    public const double MinShapeArea = 0.004;

    private const double TriangleSkew = -0.5657; // -2 sqrt(2) / 5: rows of an upright triangle have density ~ depth.

    /// <summary>Reads background colour, shape colour, shape kind and position from an image (L, RGB or RGBA; alpha is ignored).</summary>
    /// <exception cref="ArgumentException">The image is smaller than 16 x 16.</exception>
    public static SceneReading Check(ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.Width < 16 || image.Height < 16)
            throw new ArgumentException($"The scene checker needs an image of at least 16x16 pixels, got {image.Width}x{image.Height}.", nameof(image));
        var rgb = image.Channels == 3 ? image : image.ToRgb();
        int w = rgb.Width, h = rgb.Height, n = w * h;
        var px = rgb.Pixels;
        // Nearest palette colour per pixel, computed only where needed (border and shape interior); 255 = not yet.
        var nearest = new byte[n];
        Array.Fill(nearest, (byte)255);
        int Nearest(int i) => nearest[i] != 255 ? nearest[i] : nearest[i] = (byte)ScenePalette.NearestIndex(px[3 * i], px[3 * i + 1], px[3 * i + 2]);

        // 1. Background from the border ring: its colour name by vote, its measured colour as a plane over the image
        // (least squares on the ring pixels that voted for it), so smooth shading or gradients are not taken for shape.
        int ring = Math.Max(1, Math.Min(w, h) / 32);
        var votes = new int[8];
        int borderCount = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                if (IsBorder(x, y, w, h, ring)) { votes[Nearest(y * w + x)]++; borderCount++; }
        int bg = ArgMax(votes);
        var plane = FitBackground(px, nearest, bg, w, h, ring);
        var reading = new SceneReading { Background = (SceneColor)bg, BackgroundAgreement = (double)votes[bg] / borderCount };
        // Each pixel minus the local background colour.
        var off = new float[3 * n];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double pu = (x + 0.5) / w - 0.5, pv = (y + 0.5) / h - 0.5;
                int i = 3 * (y * w + x);
                for (int c = 0; c < 3; c++) off[i + c] = (float)(px[i + c] - (plane[3 * c] + plane[3 * c + 1] * pu + plane[3 * c + 2] * pv));
            }

        // 2. First-pass shape region: clearly off the local background.
        double closest = double.MaxValue;
        foreach (var other in ScenePalette.Colors)
            if ((int)other != bg)
            {
                var (r, g, b) = ScenePalette.ToRgb(other);
                closest = Math.Min(closest, Distance(r - plane[0], g - plane[3], b - plane[6]));
            }
        float far2 = (float)(0.16 * closest * closest); // (0.4 closest)^2
        var mask = new bool[n];
        for (int i = 0; i < n; i++)
            mask[i] = off[3 * i] * off[3 * i] + off[3 * i + 1] * off[3 * i + 1] + off[3 * i + 2] * off[3 * i + 2] > far2;
        var region = LargestRegion(mask, w, h);
        if (region.Count < MinShapeArea * n) return reading;

        // 3. Shape colour from the inner pixels.
        var inner = Inner(region, w, h);
        Array.Clear(votes);
        foreach (int i in inner) votes[Nearest(i)]++;
        votes[bg] = 0;
        int shape = ArgMax(votes);
        if (votes[shape] == 0) return reading;
        double agreement = (double)votes[shape] / inner.Count;
        // Mean offset of the shape colour from the local background under it.
        double dr = 0, dg = 0, db = 0;
        foreach (int i in inner)
            if (nearest[i] == shape)
            {
                dr += off[3 * i];
                dg += off[3 * i + 1];
                db += off[3 * i + 2];
            }
        dr /= votes[shape]; dg /= votes[shape]; db /= votes[shape];

        // 4. Final region: more than halfway from the local background colour to the shape colour.
        double len2 = dr * dr + dg * dg + db * db;
        if (len2 < 1) return reading;
        float fr = (float)(dr / len2), fg = (float)(dg / len2), fb = (float)(db / len2);
        for (int i = 0; i < n; i++)
            mask[i] = off[3 * i] * fr + off[3 * i + 1] * fg + off[3 * i + 2] * fb > 0.5f;
        region = LargestRegion(mask, w, h);
        if (region.Count < MinShapeArea * n) return reading;

        // 5. Kind from moments.
        double mx = 0, my = 0;
        int minX = w, maxX = -1, minY = h, maxY = -1;
        var columns = new int[w];
        var rows = new int[h];
        foreach (int i in region)
        {
            int x = i % w, y = i / w;
            mx += x; my += y;
            columns[x]++; rows[y]++;
            minX = Math.Min(minX, x); maxX = Math.Max(maxX, x);
            minY = Math.Min(minY, y); maxY = Math.Max(maxY, y);
        }
        int count = region.Count;
        mx /= count; my /= count;
        double m20 = 0, m02 = 0, m22 = 0, m03 = 0;
        foreach (int i in region)
        {
            double x = i % w - mx, y = i / w - my;
            m20 += x * x; m02 += y * y; m22 += x * x * y * y; m03 += y * y * y;
        }
        m20 /= count; m02 /= count; m22 /= count; m03 /= count;
        double skew = m02 > 0 ? m03 / Math.Pow(m02, 1.5) : 0;
        double ratio = m20 > 0 && m02 > 0 ? m22 / (m20 * m02) : 0;
        double u = skew / -TriangleSkew, v = (ratio - 2.0 / 3.0) * 3.0;
        Span<double> dist = stackalloc double[3];
        dist[(int)ShapeKind.Circle] = Math.Sqrt(u * u + v * v);
        dist[(int)ShapeKind.Square] = Math.Sqrt(u * u + (v - 1) * (v - 1));
        dist[(int)ShapeKind.Triangle] = Math.Sqrt((u + 1) * (u + 1) + (v - 0.4) * (v - 0.4));
        int kind = 0;
        for (int k = 1; k < 3; k++) if (dist[k] < dist[kind]) kind = k;
        double second = double.MaxValue;
        for (int k = 0; k < 3; k++) if (k != kind) second = Math.Min(second, dist[k]);

        // 6. Position from the robust centre.
        double cx = (Percentile(columns, count, 0.01) + Percentile(columns, count, 0.99) + 1) / 2.0 / w;
        double cy = (Percentile(rows, count, 0.01) + Percentile(rows, count, 0.99) + 1) / 2.0 / h;
        double ax = Math.Abs(cx - 0.5), ay = Math.Abs(cy - 0.5);
        ScenePosition position;
        double positionMargin;
        if (ax < CenterRegion && ay < CenterRegion)
        {
            position = ScenePosition.Center;
            positionMargin = CenterRegion - Math.Max(ax, ay);
        }
        else
        {
            position = cy < 0.5
                ? cx < 0.5 ? ScenePosition.TopLeft : ScenePosition.TopRight
                : cx < 0.5 ? ScenePosition.BottomLeft : ScenePosition.BottomRight;
            positionMargin = Math.Min(Math.Max(ax, ay) - CenterRegion, Math.Min(ax, ay));
        }

        return reading with
        {
            ShapeColor = (SceneColor)shape,
            ShapeColorAgreement = agreement,
            Shape = (ShapeKind)kind,
            ShapeMargin = second - dist[kind],
            Position = position,
            PositionMargin = positionMargin,
            CenterX = cx,
            CenterY = cy,
            Area = (double)count / n,
            Fill = (double)count / ((maxX - minX + 1) * (maxY - minY + 1)),
            Skewness = skew,
            MomentRatio = ratio,
        };
    }

    /// <summary>Whether the image shows what <paramref name="expected"/> says (position only when it has one).</summary>
    /// <inheritdoc cref="Check" path="/exception"/>
    public static bool Matches(SceneDescription expected, ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(expected);
        return Check(image).Matches(expected);
    }

    /// <summary>Whether the image shows what the scene's caption says (position only when it has one).</summary>
    /// <inheritdoc cref="Check" path="/exception"/>
    public static bool Matches(SceneSpec expected, ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(expected);
        return Matches(expected.Description, image);
    }

    /// <summary>Whether the image shows what a caption says; the caption is parsed with <see cref="SceneDescription.Parse"/>.</summary>
    /// <exception cref="FormatException">The caption is not a scene caption.</exception>
    /// <inheritdoc cref="Check" path="/exception"/>
    public static bool Matches(string caption, ImageBuffer image) => Matches(SceneDescription.Parse(caption), image);

    /// <summary>Checks every (caption, image) pair and tallies the results.</summary>
    /// <inheritdoc cref="Check" path="/exception"/>
    public static SceneScore Score(IEnumerable<(SceneDescription Expected, ImageBuffer Image)> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        var score = new SceneScore();
        foreach (var (expected, image) in results) score.Add(expected, Check(image));
        return score;
    }

    private static double Distance(double dr, double dg, double db) => Math.Sqrt(dr * dr + dg * dg + db * db);

    private static bool IsBorder(int x, int y, int w, int h, int ring) => x < ring || y < ring || x >= w - ring || y >= h - ring;

    // Per channel c, (a, b, c) of value = a + b u + c v with (u, v) the pixel centre in [-0.5, 0.5]: least squares over
    // the border pixels whose nearest palette colour is the background. The ring surrounds the image, so the fit is
    // always well posed; a is the background colour at the image centre.
    private static double[] FitBackground(byte[] px, byte[] nearest, int bg, int w, int h, int ring)
    {
        double s1 = 0, su = 0, sv = 0, suu = 0, suv = 0, svv = 0;
        var rhs = new double[9];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int i = y * w + x;
                if (!IsBorder(x, y, w, h, ring) || nearest[i] != bg) continue;
                double u = (x + 0.5) / w - 0.5, v = (y + 0.5) / h - 0.5;
                s1++; su += u; sv += v; suu += u * u; suv += u * v; svv += v * v;
                for (int c = 0; c < 3; c++)
                {
                    double p = px[3 * i + c];
                    rhs[3 * c] += p; rhs[3 * c + 1] += p * u; rhs[3 * c + 2] += p * v;
                }
            }
        // Solve [[s1 su sv] [su suu suv] [sv suv svv]] x = rhs by Cramer's rule.
        double det = s1 * (suu * svv - suv * suv) - su * (su * svv - suv * sv) + sv * (su * suv - suu * sv);
        var plane = new double[9];
        for (int c = 0; c < 3; c++)
        {
            double r0 = rhs[3 * c], r1 = rhs[3 * c + 1], r2 = rhs[3 * c + 2];
            if (Math.Abs(det) < 1e-9 * Math.Max(1, s1 * s1 * s1))
            {
                plane[3 * c] = r0 / s1; // too few points to fit a slope: a flat background
                continue;
            }
            plane[3 * c] = (r0 * (suu * svv - suv * suv) - su * (r1 * svv - suv * r2) + sv * (r1 * suv - suu * r2)) / det;
            plane[3 * c + 1] = (s1 * (r1 * svv - suv * r2) - r0 * (su * svv - suv * sv) + sv * (su * r2 - r1 * sv)) / det;
            plane[3 * c + 2] = (s1 * (suu * r2 - r1 * suv) - su * (su * r2 - r1 * sv) + r0 * (su * suv - suu * sv)) / det;
        }
        return plane;
    }

    private static int ArgMax(int[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    // The largest 8-connected set of true pixels, as pixel indices.
    private static List<int> LargestRegion(bool[] mask, int w, int h)
    {
        var seen = new bool[mask.Length];
        var best = new List<int>();
        var current = new List<int>();
        var stack = new Stack<int>();
        for (int start = 0; start < mask.Length; start++)
        {
            if (!mask[start] || seen[start]) continue;
            current.Clear();
            seen[start] = true;
            stack.Push(start);
            while (stack.Count > 0)
            {
                int i = stack.Pop();
                current.Add(i);
                int x = i % w, y = i / w;
                for (int ny = Math.Max(0, y - 1); ny <= Math.Min(h - 1, y + 1); ny++)
                    for (int nx = Math.Max(0, x - 1); nx <= Math.Min(w - 1, x + 1); nx++)
                    {
                        int j = ny * w + nx;
                        if (mask[j] && !seen[j]) { seen[j] = true; stack.Push(j); }
                    }
            }
            if (current.Count > best.Count) (best, current) = (current, best);
        }
        return best;
    }

    // The region eroded (3x3) up to twice, stopping before fewer than 16 pixels would remain.
    private static List<int> Inner(List<int> region, int w, int h)
    {
        var inside = new bool[w * h];
        foreach (int i in region) inside[i] = true;
        var current = region;
        for (int pass = 0; pass < 2; pass++)
        {
            var eroded = new List<int>();
            foreach (int i in current)
            {
                int x = i % w, y = i / w;
                bool all = x > 0 && y > 0 && x < w - 1 && y < h - 1;
                for (int dy = -1; all && dy <= 1; dy++)
                    for (int dx = -1; all && dx <= 1; dx++)
                        all = inside[i + dy * w + dx];
                if (all) eroded.Add(i);
            }
            if (eroded.Count < 16) break;
            Array.Clear(inside);
            foreach (int i in eroded) inside[i] = true;
            current = eroded;
        }
        return current;
    }

    // The smallest index whose cumulative count exceeds fraction * total.
    private static int Percentile(int[] histogram, int total, double fraction)
    {
        double target = fraction * total;
        int cumulative = 0;
        for (int i = 0; i < histogram.Length; i++)
        {
            cumulative += histogram[i];
            if (cumulative > target) return i;
        }
        return histogram.Length - 1;
    }
}
