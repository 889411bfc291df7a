using DiffusersSharp.Images;

namespace DiffusersSharp.Tests.Images;

public class PillowResampleTests
{
    public static TheoryData<string> Filters => new() { "nearest", "bilinear", "bicubic", "lanczos" };

    private static ResampleFilter Parse(string name) => name switch
    {
        "nearest" => ResampleFilter.Nearest,
        "bilinear" => ResampleFilter.Bilinear,
        "bicubic" => ResampleFilter.Bicubic,
        "lanczos" => ResampleFilter.Lanczos,
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Filters))]
    public void MatchesPillowBitForBit(string filter)
    {
        var failures = new List<string>();
        int cases = 0;
        foreach (var (name, srcW, srcH, dstW, dstH) in ImageFixtures.ResizeCases())
        {
            foreach (var suffix in new[] { "", ".L" })
            {
                var src = ImageFixtures.Image($"{name}.src{suffix}");
                Assert.Equal((srcW, srcH), (src.Width, src.Height));
                var expected = ImageFixtures.Image($"{name}.{filter}{suffix}");
                var actual = src.Resize(dstW, dstH, Parse(filter));
                var (count, max) = ImageFixtures.Diff(expected, actual);
                if (count != 0) failures.Add($"{name}{suffix} {srcW}x{srcH}->{dstW}x{dstH}: {count} bytes differ, max {max}");
                cases++;
            }
        }
        Assert.Equal(12, cases);
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void RejectsEmptyTargets()
    {
        var img = new ImageBuffer(4, 4, 3);
        Assert.Throws<ArgumentOutOfRangeException>(() => img.Resize(0, 4, ResampleFilter.Lanczos));
        Assert.Throws<ArgumentOutOfRangeException>(() => img.Resize(4, -1, ResampleFilter.Lanczos));
        Assert.Throws<ArgumentException>(() => new ImageBuffer(4, 4, 2));
        Assert.Throws<ArgumentException>(() => new ImageBuffer(4, 4, 3, new byte[47]));
    }
}
