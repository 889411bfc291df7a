namespace DiffusersSharp.Images;

/// <summary>
/// Pillow's <c>ImageFilter.GaussianBlur</c> (libImaging BoxBlur.c), bit for bit: three passes of an extended box
/// blur (integer radius plus fractional edge weight, 24-bit fixed point, edge pixels repeated) along rows, then
/// three along columns, with the box radius from Gwosdek et al.'s approximation of the Gaussian's variance.
/// </summary>
public static class PillowBlur
{
    private const int Passes = 3;

    /// <summary><c>image.filter(ImageFilter.GaussianBlur((xRadius, yRadius)))</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A radius is negative or not finite.</exception>
    public static ImageBuffer GaussianBlur(ImageBuffer image, float xRadius, float yRadius)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (!(xRadius >= 0) || float.IsInfinity(xRadius)) throw new ArgumentOutOfRangeException(nameof(xRadius), xRadius, "Blur radius must be a finite value >= 0.");
        if (!(yRadius >= 0) || float.IsInfinity(yRadius)) throw new ArgumentOutOfRangeException(nameof(yRadius), yRadius, "Blur radius must be a finite value >= 0.");
        if (xRadius == 0 && yRadius == 0) return image.Clone();
        return BoxBlur(image, BoxRadius(xRadius, Passes), BoxRadius(yRadius, Passes), Passes);
    }

    /// <summary><c>image.filter(ImageFilter.BoxBlur(radius))</c> with <paramref name="passes"/> passes per direction.</summary>
    public static ImageBuffer BoxBlur(ImageBuffer image, float xRadius, float yRadius, int passes = 1)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (passes < 1) throw new ArgumentOutOfRangeException(nameof(passes), passes, "Number of passes must be greater than zero.");
        if (!(xRadius >= 0) || !(yRadius >= 0)) throw new ArgumentOutOfRangeException(nameof(xRadius), "Radius must be >= 0.");
        int w = image.Width, h = image.Height, c = image.Channels;
        var px = (byte[])image.Pixels.Clone();
        var lineIn = new byte[Math.Max(w, h)];
        var lineOut = new byte[Math.Max(w, h)];
        if (xRadius != 0)
        {
            for (int p = 0; p < passes; p++)
                for (int y = 0; y < h; y++)
                    for (int ch = 0; ch < c; ch++)
                    {
                        for (int x = 0; x < w; x++) lineIn[x] = px[(y * w + x) * c + ch];
                        BlurLine(lineOut, lineIn, w, xRadius);
                        for (int x = 0; x < w; x++) px[(y * w + x) * c + ch] = lineOut[x];
                    }
        }
        if (yRadius != 0)
        {
            for (int p = 0; p < passes; p++)
                for (int x = 0; x < w; x++)
                    for (int ch = 0; ch < c; ch++)
                    {
                        for (int y = 0; y < h; y++) lineIn[y] = px[(y * w + x) * c + ch];
                        BlurLine(lineOut, lineIn, h, yRadius);
                        for (int y = 0; y < h; y++) px[(y * w + x) * c + ch] = lineOut[y];
                    }
        }
        return new ImageBuffer(w, h, c, px);
    }

    /// <summary>BoxBlur.c <c>_gaussian_blur_radius</c>, with its float / double mix.</summary>
    internal static float BoxRadius(float radius, int passes)
    {
        float sigma2 = radius * radius / passes;
        float bigL = (float)Math.Sqrt(12.0 * sigma2 + 1.0);
        float l = (float)Math.Floor((bigL - 1.0) / 2.0);
        float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
        a /= 6 * (sigma2 - (l + 1) * (l + 1));
        return l + a;
    }

    /// <summary>BoxBlur.c <c>ImagingHorizontalBoxBlur</c> + <c>ImagingLineBoxBlur8</c> on one line of <paramref name="n"/> values.</summary>
    private static void BlurLine(byte[] lineOut, byte[] lineIn, int n, float floatRadius)
    {
        int radius = (int)floatRadius;
        uint ww = (uint)((1 << 24) / (floatRadius * 2 + 1));
        uint fw = ((1u << 24) - (uint)(radius * 2 + 1) * ww) / 2;
        int edgeA = Math.Min(radius + 1, n);
        int edgeB = Math.Max(n - radius - 1, 0);
        int lastx = n - 1;

        unchecked
        {
            uint acc = (uint)(lineIn[0] * (radius + 1));
            for (int x = 0; x < edgeA - 1; x++) acc += lineIn[x];
            acc += (uint)(lineIn[lastx] * (radius - edgeA + 1));

            void Emit(int x, int sub, int add, int left, int right)
            {
                acc += (uint)(lineIn[add] - lineIn[sub]);
                uint bulk = acc * ww + (uint)(lineIn[left] + lineIn[right]) * fw;
                lineOut[x] = (byte)((bulk + (1u << 23)) >> 24);
            }

            if (edgeA <= edgeB)
            {
                for (int x = 0; x < edgeA; x++) Emit(x, 0, x + radius, 0, x + radius + 1);
                for (int x = edgeA; x < edgeB; x++) Emit(x, x - radius - 1, x + radius, x - radius - 1, x + radius + 1);
                for (int x = edgeB; x <= lastx; x++) Emit(x, x - radius - 1, lastx, x - radius - 1, lastx);
            }
            else
            {
                for (int x = 0; x < edgeB; x++) Emit(x, 0, x + radius, 0, x + radius + 1);
                for (int x = edgeB; x < edgeA; x++) Emit(x, 0, lastx, 0, lastx);
                for (int x = edgeA; x <= lastx; x++) Emit(x, x - radius - 1, lastx, x - radius - 1, lastx);
            }
        }
    }
}
