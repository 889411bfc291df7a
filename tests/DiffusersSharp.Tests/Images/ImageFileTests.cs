using System.Text;
using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Images;

public sealed class ImageFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("imgio").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static ImageBuffer Pattern(int w, int h, int c)
    {
        var px = new byte[w * h * c];
        for (int i = 0; i < px.Length; i++) px[i] = (byte)(i * 37 % 251);
        return new ImageBuffer(w, h, c, px);
    }

    [Fact]
    public void DecodesFixturePngsAsPillowDoes()
    {
        var src = ImageFile.LoadRgb(Fixtures.Path("image-ops/pre_src.png"));
        Assert.Equal(0, ImageFixtures.Diff(ImageFixtures.Image("pre.src"), src).Count);
        var mask = ImageFile.Load(Fixtures.Path("image-ops/pre_mask.png"));
        Assert.Equal(1, mask.Channels);
        Assert.Equal(0, ImageFixtures.Diff(ImageFixtures.Image("pre.mask_src"), mask).Count);
        var soft = ImageFile.LoadGrayscale(Fixtures.Path("image-ops/pre_mask_soft.png"));
        Assert.Equal(0, ImageFixtures.Diff(ImageFixtures.Image("pre.mask_soft_src"), soft).Count);
    }

    [Fact]
    public void PipelinePngsAreTheRoundedNpOutputs()
    {
        // diffusers wrote t2i.png from numpy_to_pil((image * 255).round()) of the same run as t2i.image.
        var png = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/t2i.png"));
        using var np = Fixtures.Expected()["t2i.image"];
        // Postprocess without denormalization is the identity on an NHWC->NCHW view of the [0, 1] values.
        using var nchw = np.permute(0, 3, 1, 2);
        var ours = new VaeImageProcessor().PostprocessToImages(nchw, denormalize: false)[0];
        var (count, max) = ImageFixtures.Diff(png, ours);
        Assert.True(count == 0, $"{count} bytes differ, max {max}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    public void PngRoundTripsPixelsAndText(int channels)
    {
        var image = Pattern(13, 7, channels);
        string path = Path.Combine(_dir, $"c{channels}.png");
        var text = new Dictionary<string, string>
        {
            [PngText.ParametersKeyword] = "a teddy bear\nNegative prompt: pepperoni\nSteps: 4, Seed: 123456",
            ["Comment"] = "ünïcødé ✓ 熊",
        };
        ImageFile.SavePng(image, path, text);
        var back = ImageFile.Load(path);
        Assert.Equal(channels, back.Channels);
        Assert.Equal(image.Pixels, back.Pixels);
        Assert.Equal(text, ImageFile.ReadPngText(path));
        Assert.Single(Directory.GetFiles(_dir));
    }

    [Fact]
    public void TextChunksCarryValidCrcs()
    {
        Assert.Equal(0xAE426082u, PngText.Crc(Encoding.ASCII.GetBytes("IEND")));
        var png = ImageFile.EncodePng(Pattern(4, 4, 3), new Dictionary<string, string> { ["parameters"] = "x" });
        int at = 33; // right after IHDR
        Assert.Equal("tEXt", Encoding.ASCII.GetString(png, at + 4, 4));
        int len = png[at] << 24 | png[at + 1] << 16 | png[at + 2] << 8 | png[at + 3];
        Assert.Equal(len, "parameters".Length + 2);
        uint crc = (uint)(png[at + 8 + len] << 24 | png[at + 9 + len] << 16 | png[at + 10 + len] << 8 | png[at + 11 + len]);
        Assert.Equal(PngText.Crc(png.AsSpan(at + 4, 4 + len)), crc);
        png[at + 9] ^= 1; // corrupt the keyword
        Assert.Throws<InvalidDataException>(() => PngText.Read(png));
    }

    [Fact]
    public void JpegRoundTripsClosely()
    {
        var image = new ImageBuffer(16, 16, 3, Enumerable.Range(0, 16 * 16 * 3).Select(i => (byte)(i % 3 == 0 ? 200 : 40)).ToArray());
        string path = Path.Combine(_dir, "x.jpg");
        ImageFile.Save(image, path);
        var back = ImageFile.Load(path);
        Assert.Equal((16, 16, 3), (back.Width, back.Height, back.Channels));
        Assert.True(ImageFixtures.Diff(image, back).Max <= 4);
    }

    [Fact]
    public void AppliesExifOrientation()
    {
        // 16 wide x 8 high: left half red, right half blue; EXIF orientation 6 = rotate 90 degrees clockwise.
        var px = new byte[16 * 8 * 3];
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 16; x++)
                px[(y * 16 + x) * 3 + (x < 8 ? 0 : 2)] = 255;
        var jpeg = ImageFile.EncodeJpeg(new ImageBuffer(16, 8, 3, px), 100);
        byte[] exif =
        {
            0xFF, 0xE1, 0x00, 0x22, (byte)'E', (byte)'x', (byte)'i', (byte)'f', 0, 0,
            (byte)'M', (byte)'M', 0x00, 0x2A, 0, 0, 0, 8, // TIFF header, IFD at 8
            0x00, 0x01, 0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1, 0x00, 0x06, 0, 0, // Orientation = 6
            0, 0, 0, 0, // no next IFD
        };
        var withExif = jpeg.Take(2).Concat(exif).Concat(jpeg.Skip(2)).ToArray();
        var turned = ImageFile.Decode(withExif, "exif.jpg");
        Assert.Equal((8, 16), (turned.Width, turned.Height));
        Assert.True(turned.Pixels[(2 * 8 + 4) * 3] > 200 && turned.Pixels[(2 * 8 + 4) * 3 + 2] < 60, "top should be red");
        Assert.True(turned.Pixels[(13 * 8 + 4) * 3 + 2] > 200 && turned.Pixels[(13 * 8 + 4) * 3] < 60, "bottom should be blue");
        var raw = ImageFile.Decode(withExif, "exif.jpg", applyExifOrientation: false);
        Assert.Equal((16, 8), (raw.Width, raw.Height));
    }

    [Fact]
    public void UnreadableFilesGiveClearErrors()
    {
        string garbage = Path.Combine(_dir, "garbage.png");
        File.WriteAllBytes(garbage, Encoding.ASCII.GetBytes("this is not an image at all"));
        var e = Assert.Throws<InvalidDataException>(() => ImageFile.Load(garbage));
        Assert.Contains(garbage, e.Message);

        string empty = Path.Combine(_dir, "empty.jpg");
        File.WriteAllBytes(empty, Array.Empty<byte>());
        Assert.Contains(empty, Assert.Throws<InvalidDataException>(() => ImageFile.Load(empty)).Message);

        var png = File.ReadAllBytes(Fixtures.Path("image-ops/pre_src.png"));
        string truncated = Path.Combine(_dir, "truncated.png");
        File.WriteAllBytes(truncated, png.Take(png.Length / 2).ToArray());
        Assert.Contains(truncated, Assert.Throws<InvalidDataException>(() => ImageFile.Load(truncated)).Message);

        Assert.Throws<FileNotFoundException>(() => ImageFile.Load(Path.Combine(_dir, "missing.png")));
        Assert.Throws<ArgumentException>(() => ImageFile.Save(Pattern(2, 2, 3), Path.Combine(_dir, "x.tiff")));
        Assert.Throws<ArgumentException>(() => ImageFile.EncodePng(Pattern(2, 2, 3), new Dictionary<string, string> { [""] = "x" }));
    }
}
