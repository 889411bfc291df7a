using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Images;

public class VaeImageProcessorTests
{
    public static TheoryData<int, int> Sizes => new() { { 64, 64 }, { 48, 80 }, { 256, 256 } };

    private static void AssertExact(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(ScalarType.Float32, actual.dtype);
        double err = TensorAssert.MaxAbsDiff(actual, expected);
        Assert.True(err == 0, $"{what}: max |diff| = {err:G4}, expected bit-exact");
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void PreprocessesImagesExactlyAsDiffusers(int height, int width)
    {
        var processor = new VaeImageProcessor();
        using var actual = processor.Preprocess(ImageFixtures.Image("pre.src"), height, width);
        AssertExact(ImageFixtures.Tensor($"pre.image.{height}x{width}"), actual, $"pre.image.{height}x{width}");
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void PreprocessesMasksExactlyAsTheSd3MaskProcessor(int height, int width)
    {
        var masks = VaeImageProcessor.CreateMaskProcessor();
        using var mask = masks.Preprocess(ImageFixtures.Image("pre.mask_src"), height, width);
        AssertExact(ImageFixtures.Tensor($"pre.mask.{height}x{width}"), mask, $"pre.mask.{height}x{width}");
        using var soft = masks.Preprocess(ImageFixtures.Image("pre.mask_soft_src"), height, width);
        AssertExact(ImageFixtures.Tensor($"pre.mask_soft.{height}x{width}"), soft, $"pre.mask_soft.{height}x{width}");
        using var latent = VaeImageProcessor.ResizeMaskNearest(mask, height / 8, width / 8);
        AssertExact(ImageFixtures.Tensor($"pre.mask_latent.{height}x{width}"), latent, $"pre.mask_latent.{height}x{width}");
    }

    [Fact]
    public void MaskProcessorConvertsRgbMasksToGrayscale()
    {
        var masks = VaeImageProcessor.CreateMaskProcessor();
        using var fromL = masks.Preprocess(ImageFixtures.Image("pre.mask_src"), 48, 80);
        using var fromRgb = masks.Preprocess(ImageFixtures.Image("pre.mask_src").ToRgb(), 48, 80);
        Assert.Equal(new long[] { 1, 1, 48, 80 }, fromRgb.shape);
        Assert.Equal(0, TensorAssert.MaxAbsDiff(fromRgb, fromL));
    }

    [Fact]
    public void BlurMatchesPillowGaussianBlurBitForBit()
    {
        var expected = ImageFixtures.Image("pre.mask_blur_factor4");
        var actual = VaeImageProcessor.Blur(ImageFixtures.Image("pre.mask_src"), 4);
        var (count, max) = ImageFixtures.Diff(expected, actual);
        Assert.True(count == 0, $"{count} bytes differ, max {max}");
        Assert.NotEqual(ImageFixtures.Image("pre.mask_src").Pixels, actual.Pixels);
    }

    [Fact]
    public void PostprocessMatchesDiffusersNpAndPil()
    {
        var processor = new VaeImageProcessor();
        var input = ImageFixtures.Tensor("post.in");
        using var np = processor.Postprocess(input);
        AssertExact(ImageFixtures.Tensor("post.np"), np, "post.np");
        var images = processor.PostprocessToImages(input);
        Assert.Single(images);
        var (count, max) = ImageFixtures.Diff(ImageFixtures.Image("post.uint8"), images[0]);
        Assert.True(count == 0, $"post.uint8: {count} bytes differ, max {max}");
    }

    [Fact]
    public void DefaultSizeRoundsDownToTheVaeScaleFactor()
    {
        var processor = new VaeImageProcessor();
        Assert.Equal((96, 56), processor.GetDefaultHeightWidth(100, 60));
        Assert.Equal((48, 80), processor.GetDefaultHeightWidth(100, 60, 50, 87));
        using var t = processor.Preprocess(new ImageBuffer(60, 100, 3));
        Assert.Equal(new long[] { 1, 3, 96, 56 }, t.shape);
        Assert.Equal(-1f, t.max().item<float>());
    }

    [Fact]
    public void TensorInputsWithLatentChannelsPassThrough()
    {
        var processor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeLatentChannels = 16 });
        using var latents = randn(1, 16, 4, 4);
        using var same = processor.Preprocess(latents, 64, 64);
        Assert.Equal(latents.shape, same.shape);
        using var img = full(new long[] { 1, 3, 16, 16 }, 0.25f);
        using var pre = processor.Preprocess(img, 8, 8);
        Assert.Equal(new long[] { 1, 3, 8, 8 }, pre.shape);
        Assert.Equal(-0.5f, pre.max().item<float>());
    }

    [Fact]
    public void RejectsInvalidInput()
    {
        Assert.Throws<ArgumentException>(() => new VaeImageProcessor(new VaeImageProcessorConfig { DoConvertRgb = true, DoConvertGrayscale = true }));
        var processor = new VaeImageProcessor();
        Assert.Throws<ArgumentException>(() => processor.Preprocess(Array.Empty<ImageBuffer>()));
        Assert.Throws<ArgumentException>(() => processor.Preprocess(new ImageBuffer(4, 4, 3)));
        Assert.Throws<ArgumentException>(() => processor.Preprocess(new[] { new ImageBuffer(16, 16, 3), new ImageBuffer(16, 16, 1) }));
        using var threeD = zeros(3, 8, 8);
        Assert.Throws<ArgumentException>(() => processor.Postprocess(threeD));
    }
}
