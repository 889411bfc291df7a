namespace DiffusersSharp.Images;

/// <summary>
/// Pillow's cropping, pasting and alpha compositing of 8-bit images (libImaging Crop.c, Paste.c, Convert.c and
/// AlphaComposite.c), bit for bit, as diffusers' <c>padding_mask_crop</c> uses them. A 4-channel
/// <see cref="ImageBuffer"/> is RGBA, or RGBa (colour premultiplied by alpha) where a method says so.
/// </summary>
public static class PillowCompose
{
    /// <summary>
    /// <c>image.crop((x0, y0, x1, y1))</c>: the region, with the parts outside the image black (and transparent).
    /// </summary>
    /// <exception cref="ArgumentException">The box is reversed or empty.</exception>
    public static ImageBuffer Crop(ImageBuffer image, int x0, int y0, int x1, int y1)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (x1 <= x0 || y1 <= y0) throw new ArgumentException($"Crop box ({x0}, {y0}, {x1}, {y1}) is empty or reversed.");
        var result = new ImageBuffer(x1 - x0, y1 - y0, image.Channels);
        Paste(result, image, -x0, -y0);
        return result;
    }

    /// <summary>
    /// <c>target.paste(source, (x, y))</c> without a mask: the source, converted to the target's channels (L is replicated
    /// and RGB gets opaque alpha, as Pillow converts; alpha is dropped into an RGB target), is copied in with its top-left
    /// corner at (x, y); what falls outside the target is clipped.
    /// </summary>
    /// <exception cref="ArgumentException">A target with fewer channels than colour (an L target for a colour source).</exception>
    public static void Paste(ImageBuffer target, ImageBuffer source, int x, int y)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(source);
        var src = ToChannels(source, target.Channels);
        int c = target.Channels;
        int left = Math.Max(0, x), top = Math.Max(0, y);
        int right = Math.Min(target.Width, x + src.Width), bottom = Math.Min(target.Height, y + src.Height);
        if (right <= left) return;
        for (int ty = top; ty < bottom; ty++)
            Buffer.BlockCopy(src.Pixels, ((ty - y) * src.Width + (left - x)) * c, target.Pixels, (ty * target.Width + left) * c, (right - left) * c);
    }

    /// <summary>
    /// <c>target.paste(source, mask=mask)</c> with an L mask of the target's size (Paste.c <c>paste_mask_L</c>): every
    /// channel, alpha included, becomes <c>(target * (255 - m) + source * m) / 255</c> in Pillow's rounding. The source
    /// must have the target's channel count (Pillow converts RGBA to RGBa before pasting into an RGBa image).
    /// </summary>
    /// <exception cref="ArgumentException">Sizes or channel counts that do not match ("images do not match").</exception>
    public static void Paste(ImageBuffer target, ImageBuffer source, ImageBuffer mask)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(mask);
        if (source.Width != target.Width || source.Height != target.Height || mask.Width != target.Width || mask.Height != target.Height)
            throw new ArgumentException($"Images do not match: target {target.Width}x{target.Height}, source {source.Width}x{source.Height}, mask {mask.Width}x{mask.Height}.");
        if (source.Channels != target.Channels) throw new ArgumentException($"Paste needs the target's {target.Channels} channels, got {source.Channels}.", nameof(source));
        if (mask.Channels != 1) throw new ArgumentException("The paste mask must be an L (one-channel) image.", nameof(mask));
        int c = target.Channels;
        for (int p = 0; p < mask.Pixels.Length; p++)
        {
            int m = mask.Pixels[p];
            for (int ch = 0; ch < c; ch++)
            {
                int i = p * c + ch;
                target.Pixels[i] = Div255(target.Pixels[i] * (255 - m) + source.Pixels[i] * m);
            }
        }
    }

    /// <summary><c>convert("RGBa")</c> of an RGBA image (Convert.c <c>rgbA2rgba</c>): colour times alpha / 255, rounded.</summary>
    public static ImageBuffer Premultiply(ImageBuffer rgba)
    {
        RequireFourChannels(rgba);
        var o = (byte[])rgba.Pixels.Clone();
        for (int p = 0; p < o.Length; p += 4)
            for (int ch = 0; ch < 3; ch++) o[p + ch] = Div255(o[p + ch] * o[p + 3]);
        return new ImageBuffer(rgba.Width, rgba.Height, 4, o);
    }

    /// <summary><c>convert("RGBA")</c> of an RGBa image (Convert.c <c>rgba2rgbA</c>): colour times 255 / alpha, truncated
    /// and clipped; fully opaque and fully transparent pixels keep their colour.</summary>
    public static ImageBuffer Unpremultiply(ImageBuffer rgbPremultiplied)
    {
        RequireFourChannels(rgbPremultiplied);
        var o = (byte[])rgbPremultiplied.Pixels.Clone();
        for (int p = 0; p < o.Length; p += 4)
        {
            int a = o[p + 3];
            if (a is 255 or 0) continue;
            for (int ch = 0; ch < 3; ch++) o[p + ch] = (byte)Math.Min(255, 255 * o[p + ch] / a);
        }
        return new ImageBuffer(rgbPremultiplied.Width, rgbPremultiplied.Height, 4, o);
    }

    /// <summary>
    /// <c>Image.alpha_composite(destination, source)</c> of two RGBA images of one size (AlphaComposite.c): the source
    /// over the destination, in Pillow's fixed-point arithmetic (7 extra bits, divisions by 255 rounded).
    /// </summary>
    /// <exception cref="ArgumentException">Not two RGBA images of the same size.</exception>
    public static ImageBuffer AlphaComposite(ImageBuffer destination, ImageBuffer source)
    {
        RequireFourChannels(destination);
        RequireFourChannels(source);
        if (source.Width != destination.Width || source.Height != destination.Height)
            throw new ArgumentException($"Images do not match: {destination.Width}x{destination.Height} and {source.Width}x{source.Height}.");
        const int precisionBits = 7;
        var d = destination.Pixels;
        var s = source.Pixels;
        var o = new byte[d.Length];
        for (int p = 0; p < o.Length; p += 4)
        {
            uint sa = s[p + 3];
            if (sa == 0)
            {
                Array.Copy(d, p, o, p, 4);
                continue;
            }
            uint blend = d[p + 3] * (255 - sa);
            uint outa255 = sa * 255 + blend;
            uint coef1 = sa * 255 * 255 * (1u << precisionBits) / outa255;
            uint coef2 = 255 * (1u << precisionBits) - coef1;
            for (int ch = 0; ch < 3; ch++)
            {
                uint tmp = s[p + ch] * coef1 + d[p + ch] * coef2;
                o[p + ch] = (byte)(ShiftForDiv255(tmp + (0x80u << precisionBits)) >> precisionBits);
            }
            o[p + 3] = (byte)ShiftForDiv255(outa255 + 0x80);
        }
        return new ImageBuffer(destination.Width, destination.Height, 4, o);
    }

    /// <summary><c>ImageOps.invert</c> of an L image: 255 - v.</summary>
    public static ImageBuffer Invert(ImageBuffer l)
    {
        ArgumentNullException.ThrowIfNull(l);
        if (l.Channels != 1) throw new ArgumentException("Invert takes an L (one-channel) image.", nameof(l));
        var o = new byte[l.Pixels.Length];
        for (int i = 0; i < o.Length; i++) o[i] = (byte)(255 - l.Pixels[i]);
        return new ImageBuffer(l.Width, l.Height, 1, o);
    }

    /// <summary><c>convert("RGBA")</c>: L replicated and RGB with opaque alpha; an RGBA image is copied.</summary>
    public static ImageBuffer ToRgba(ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.Channels == 4) return image.Clone();
        var o = new byte[image.Width * image.Height * 4];
        for (int i = 0, p = 0; i < image.Width * image.Height; i++, p += image.Channels)
        {
            o[4 * i] = image.Pixels[p];
            o[4 * i + 1] = image.Pixels[image.Channels == 1 ? p : p + 1];
            o[4 * i + 2] = image.Pixels[image.Channels == 1 ? p : p + 2];
            o[4 * i + 3] = 255;
        }
        return new ImageBuffer(image.Width, image.Height, 4, o);
    }

    private static ImageBuffer ToChannels(ImageBuffer image, int channels) => (image.Channels, channels) switch
    {
        var (a, b) when a == b => image,
        (_, 4) => ToRgba(image),
        (_, 3) => image.ToRgb(),
        _ => throw new ArgumentException($"Cannot paste a {image.Channels}-channel image into a {channels}-channel one."),
    };

    private static void RequireFourChannels(ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.Channels != 4) throw new ArgumentException($"Expected a 4-channel (RGBA) image, got {image.Channels} channels.", nameof(image));
    }

    // Pillow's DIV255 / MULDIV255: (a + 128) / 255 rounded, by shifts.
    private static byte Div255(int a)
    {
        int t = a + 128;
        return (byte)(((t >> 8) + t) >> 8);
    }

    private static uint ShiftForDiv255(uint a) => ((a >> 8) + a) >> 8;
}
