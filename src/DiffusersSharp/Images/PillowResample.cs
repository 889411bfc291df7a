namespace DiffusersSharp.Images;

/// <summary>
/// Pillow's <c>Image.resize</c> for 8-bit images (libImaging Resample.c and Geometry.c), reproduced bit for bit:
/// per output pixel, filter weights over a support scaled by the downscale factor, normalized in double, converted to
/// 22-bit fixed point (<c>PRECISION_BITS = 32 - 8 - 2</c>); a horizontal pass over only the rows the vertical pass
/// needs, rounded and clipped to 8 bits, then a vertical pass. NEAREST is Pillow's affine scale path instead.
/// </summary>
public static class PillowResample
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Resizes <paramref name="image"/> to <paramref name="width"/> x <paramref name="height"/>, as
    /// <c>image.resize((width, height), filter)</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static ImageBuffer Resize(ImageBuffer image, int width, int height, ResampleFilter filter)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Resize(image, width, height, filter, new ResampleBox(0, 0, image.Width, image.Height));
    }

    /// <summary>
    /// Resizes the region <paramref name="box"/> of <paramref name="image"/> to <paramref name="width"/> x
    /// <paramref name="height"/>, as <c>image.resize((width, height), filter, box)</c>. The box may be empty in one
    /// direction (diffusers' <c>resize_mode="fill"</c> stretches an edge that way): the filter then weighs the rows or
    /// columns next to that edge.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    /// <exception cref="ArgumentException">The box is outside the image or reversed (Pillow's errors), or NEAREST with a partial box.</exception>
    public static ImageBuffer Resize(ImageBuffer image, int width, int height, ResampleFilter filter, ResampleBox box)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (width < 1) throw new ArgumentOutOfRangeException(nameof(width), width, "Target width must be positive.");
        if (height < 1) throw new ArgumentOutOfRangeException(nameof(height), height, "Target height must be positive.");
        if (box.X0 < 0 || box.Y0 < 0) throw new ArgumentException("box offset can't be negative.", nameof(box));
        if (box.X1 > image.Width || box.Y1 > image.Height) throw new ArgumentException("box can't exceed original image size.", nameof(box));
        if (box.X1 - box.X0 < 0 || box.Y1 - box.Y0 < 0) throw new ArgumentException("box can't be empty.", nameof(box));
        bool wholeImage = box == new ResampleBox(0, 0, image.Width, image.Height);
        if (width == image.Width && height == image.Height && wholeImage) return image.Clone();
        if (filter == ResampleFilter.Nearest)
            return wholeImage ? Nearest(image, width, height) : throw new ArgumentException("NEAREST resizing of part of an image is not supported.", nameof(filter));

        var (support, kernel) = Filter(filter);
        int c = image.Channels;
        // Resample.c: a pass runs when the size changes or the box is not [0, output size] along it.
        bool horizontal = width != image.Width || box.X0 != 0 || box.X1 != width;
        bool vertical = height != image.Height || box.Y0 != 0 || box.Y1 != height;
        var (ksizeV, boundsV, kkV) = PrecomputeCoeffs(image.Height, box.Y0, box.Y1, height, support, kernel);
        int yFirst = boundsV[0];
        int yLast = boundsV[2 * height - 2] + boundsV[2 * height - 1];

        // Horizontal pass over rows [yFirst, yLast) only.
        byte[] src = image.Pixels;
        int srcW = image.Width, srcRows = image.Height, rowOffset = 0;
        if (horizontal)
        {
            var (ksizeH, boundsH, kkH) = PrecomputeCoeffs(image.Width, box.X0, box.X1, width, support, kernel);
            int[] kH = Normalize(kkH);
            int rows = yLast - yFirst;
            var tmp = new byte[rows * width * c];
            for (int yy = 0; yy < rows; yy++)
            {
                int inRow = (yy + yFirst) * image.Width * c;
                for (int xx = 0; xx < width; xx++)
                {
                    int xmin = boundsH[2 * xx], xmax = boundsH[2 * xx + 1], kOff = xx * ksizeH;
                    for (int ch = 0; ch < c; ch++)
                    {
                        int ss = 1 << (PrecisionBits - 1);
                        for (int x = 0; x < xmax; x++)
                            ss += src[inRow + (x + xmin) * c + ch] * kH[kOff + x];
                        tmp[(yy * width + xx) * c + ch] = Clip8(ss);
                    }
                }
            }
            src = tmp;
            srcW = width;
            srcRows = rows;
            rowOffset = yFirst;
        }

        if (!vertical)
            return new ImageBuffer(srcW, srcRows, c, src == image.Pixels ? (byte[])src.Clone() : src);

        int[] kV = Normalize(kkV);
        var outPx = new byte[height * srcW * c];
        for (int yy = 0; yy < height; yy++)
        {
            int ymin = boundsV[2 * yy] - rowOffset, ymax = boundsV[2 * yy + 1], kOff = yy * ksizeV;
            for (int xx = 0; xx < srcW; xx++)
            {
                for (int ch = 0; ch < c; ch++)
                {
                    int ss = 1 << (PrecisionBits - 1);
                    for (int y = 0; y < ymax; y++)
                        ss += src[((y + ymin) * srcW + xx) * c + ch] * kV[kOff + y];
                    outPx[(yy * srcW + xx) * c + ch] = Clip8(ss);
                }
            }
        }
        return new ImageBuffer(srcW, height, c, outPx);
    }

    private static byte Clip8(int ss)
    {
        int v = ss >> PrecisionBits; // arithmetic shift, as the C lookup index
        return v < 0 ? (byte)0 : v > 255 ? (byte)255 : (byte)v;
    }

    private static int[] Normalize(double[] kk)
    {
        var k = new int[kk.Length];
        for (int i = 0; i < kk.Length; i++)
            k[i] = kk[i] < 0 ? (int)(-0.5 + kk[i] * (1 << PrecisionBits)) : (int)(0.5 + kk[i] * (1 << PrecisionBits));
        return k;
    }

    /// <summary>Resample.c <c>precompute_coeffs</c>: bounds (first index, count) and double weights per output pixel.</summary>
    private static (int Ksize, int[] Bounds, double[] Kk) PrecomputeCoeffs(int inSize, float in0, float in1, int outSize, double filterSupport, Func<double, double> filter)
    {
        double scale = (double)(in1 - in0) / outSize;
        double filterscale = scale < 1.0 ? 1.0 : scale;
        double support = filterSupport * filterscale;
        int ksize = (int)Math.Ceiling(support) * 2 + 1;
        var kk = new double[outSize * ksize];
        var bounds = new int[outSize * 2];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = in0 + (xx + 0.5) * scale;
            double ww = 0.0;
            double ss = 1.0 / filterscale;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            int off = xx * ksize;
            for (int x = 0; x < xmax; x++)
            {
                double w = filter((x + xmin - center + 0.5) * ss);
                kk[off + x] = w;
                ww += w;
            }
            if (ww != 0.0)
                for (int x = 0; x < xmax; x++) kk[off + x] /= ww;
            bounds[2 * xx] = xmin;
            bounds[2 * xx + 1] = xmax;
        }
        return (ksize, bounds, kk);
    }

    private static (double Support, Func<double, double> Kernel) Filter(ResampleFilter filter) => filter switch
    {
        ResampleFilter.Box => (0.5, BoxKernel),
        ResampleFilter.Bilinear => (1.0, BilinearKernel),
        ResampleFilter.Hamming => (1.0, HammingKernel),
        ResampleFilter.Bicubic => (2.0, BicubicKernel),
        ResampleFilter.Lanczos => (3.0, LanczosKernel),
        _ => throw new ArgumentOutOfRangeException(nameof(filter), filter, "Unknown resampling filter."),
    };

    private static double BoxKernel(double x) => x > -0.5 && x <= 0.5 ? 1.0 : 0.0;

    private static double BilinearKernel(double x)
    {
        if (x < 0.0) x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
    }

    private static double HammingKernel(double x)
    {
        if (x < 0.0) x = -x;
        if (x == 0.0) return 1.0;
        if (x >= 1.0) return 0.0;
        x *= Math.PI;
        // The C code mixes float literals into a double expression.
        return Math.Sin(x) / x * ((double)0.54f + (double)0.46f * Math.Cos(x));
    }

    private static double BicubicKernel(double x)
    {
        const double a = -0.5;
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }

    private static double Sinc(double x)
    {
        if (x == 0.0) return 1.0;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    private static double LanczosKernel(double x) => -3.0 <= x && x < 3.0 ? Sinc(x) * Sinc(x / 3) : 0.0;

    /// <summary>
    /// NEAREST: Geometry.c <c>ImagingScaleAffine</c> with <c>a0 = in/out</c>: the source coordinate starts at
    /// <c>a0 / 2</c> and accumulates <c>a0</c> per pixel in double, truncated.
    /// </summary>
    private static ImageBuffer Nearest(ImageBuffer image, int width, int height)
    {
        int c = image.Channels;
        double ax = (double)(float)image.Width / width;
        double ay = (double)(float)image.Height / height;
        var xin = new int[width];
        double xo = ax * 0.5;
        for (int x = 0; x < width; x++)
        {
            xin[x] = Coord(xo, image.Width);
            xo += ax;
        }
        var o = new byte[width * height * c];
        double yo = ay * 0.5;
        for (int y = 0; y < height; y++)
        {
            int yi = Coord(yo, image.Height);
            yo += ay;
            if (yi < 0) continue;
            for (int x = 0; x < width; x++)
            {
                if (xin[x] < 0) continue;
                Buffer.BlockCopy(image.Pixels, (yi * image.Width + xin[x]) * c, o, (y * width + x) * c, c);
            }
        }
        return new ImageBuffer(width, height, c, o);
    }

    // COORD(v) = v < 0 ? -1 : (int)v; out-of-range coordinates leave the pixel 0 (Pillow fills with 0).
    private static int Coord(double v, int size)
    {
        int i = v < 0.0 ? -1 : (int)v;
        return i >= 0 && i < size ? i : -1;
    }
}

/// <summary>A source region for <see cref="PillowResample.Resize(ImageBuffer, int, int, ResampleFilter, ResampleBox)"/>:
/// Pillow's <c>box=(x0, y0, x1, y1)</c>, in float pixel coordinates as Pillow keeps them.</summary>
public readonly record struct ResampleBox(float X0, float Y0, float X1, float Y1);
