using System.Text.Json;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Images;

/// <summary>Reads the image-ops fixtures (Pillow / diffusers outputs).</summary>
internal static class ImageFixtures
{
    private static readonly Lazy<Dictionary<string, Tensor>> All = new(() => Fixtures.Expected("image-ops/expected.safetensors"));

    public static Tensor Tensor(string key) => All.Value.TryGetValue(key, out var t) ? t : throw new KeyNotFoundException($"image-ops fixture has no '{key}'.");

    /// <summary>A uint8 HWC (or HW) fixture as an image.</summary>
    public static ImageBuffer Image(string key)
    {
        var t = Tensor(key);
        Assert.Equal(ScalarType.Byte, t.dtype);
        int h = (int)t.shape[0], w = (int)t.shape[1], c = t.dim() == 3 ? (int)t.shape[2] : 1;
        return new ImageBuffer(w, h, c, t.contiguous().data<byte>().ToArray());
    }

    public static IEnumerable<(string Name, int SrcW, int SrcH, int DstW, int DstH)> ResizeCases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("image-ops/meta.json")));
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var src = c.GetProperty("src");
            var dst = c.GetProperty("dst");
            yield return (c.GetProperty("name").GetString()!, src[0].GetInt32(), src[1].GetInt32(), dst[0].GetInt32(), dst[1].GetInt32());
        }
    }

    /// <summary>Number of differing bytes and the largest difference.</summary>
    public static (int Count, int Max) Diff(ImageBuffer expected, ImageBuffer actual)
    {
        Assert.Equal((expected.Width, expected.Height, expected.Channels), (actual.Width, actual.Height, actual.Channels));
        int count = 0, max = 0;
        for (int i = 0; i < expected.Pixels.Length; i++)
        {
            int d = Math.Abs(expected.Pixels[i] - actual.Pixels[i]);
            if (d == 0) continue;
            count++;
            max = Math.Max(max, d);
        }
        return (count, max);
    }
}
