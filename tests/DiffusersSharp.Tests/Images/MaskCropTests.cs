using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Images;

/// <summary>
/// diffusers' padding_mask_crop image operations against diffusers v0.36.0's own VaeImageProcessor on Pillow 9.4 (fixture
/// local-diffusers/mask-crop, made by tools/reference/mask_crop.py): get_crop_region, preprocess with crops_coords and
/// resize_mode "fill", the "fill" / "crop" resize modes (Pillow's box resize of an empty edge box included), and
/// apply_overlay (premultiplied paste through the inverted mask, alpha compositing). All 8-bit: every byte must be equal,
/// and the tensors exactly equal.
/// </summary>
public sealed class MaskCropTests
{
    private const string Folder = "local-diffusers/mask-crop/";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "expected.safetensors");
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path(Folder + "init.png"));
    private static readonly ImageBuffer Tall = ImageFile.LoadRgb(Fixtures.Path(Folder + "tall.png"));
    private static readonly ImageBuffer Generated = ImageFile.LoadRgb(Fixtures.Path(Folder + "generated.png"));
    private static readonly VaeImageProcessor Processor = new();
    private static readonly VaeImageProcessor MaskProcessor = VaeImageProcessor.CreateMaskProcessor(8, 4);

    private static ImageBuffer Mask(string name) => name == "rgb"
        ? ImageFile.LoadRgb(Fixtures.Path(Folder + "mask_rgb.png"))
        : ImageFile.Load(Fixtures.Path(Folder + $"mask_{name}.png"));

    private static ImageBuffer ExpectedImage(string key)
    {
        var t = Expected[key];
        Assert.Equal(ScalarType.Byte, t.dtype);
        int h = (int)t.shape[0], w = (int)t.shape[1], c = t.dim() == 3 ? (int)t.shape[2] : 1;
        return new ImageBuffer(w, h, c, t.contiguous().data<byte>().ToArray());
    }

    private static void Same(string key, ImageBuffer actual)
    {
        var (count, max) = ImageFixtures.Diff(ExpectedImage(key), actual);
        Assert.True(count == 0, $"{key}: {count} bytes differ, by up to {max}");
    }

    [Theory]
    [InlineData("box_64x64", "box", 64, 64, 0)]
    [InlineData("box_64x64_pad8", "box", 64, 64, 8)]
    [InlineData("box_80x48_pad4", "box", 80, 48, 4)]
    [InlineData("box_48x80_pad4", "box", 48, 80, 4)]
    [InlineData("box_pad100", "box", 64, 64, 100)]
    [InlineData("soft_56x72_pad2", "soft", 56, 72, 2)]
    [InlineData("rgb_64x64_pad16", "rgb", 64, 64, 16)]
    [InlineData("rgb_128x32", "rgb", 128, 32, 0)]
    public void CropRegionMatchesDiffusers(string name, string mask, int width, int height, int pad)
    {
        var expected = Expected[$"region.{name}"].data<int>().ToArray();
        var region = VaeImageProcessor.GetCropRegion(Mask(mask), width, height, pad);
        Assert.Equal(expected, new[] { region.X1, region.Y1, region.X2, region.Y2 });
    }

    [Theory]
    [InlineData("box_64x64_pad8", "box", 64, 64, 8)]
    [InlineData("box_80x48_pad4", "box", 80, 48, 4)]
    [InlineData("soft_56x72_pad2", "soft", 56, 72, 2)]
    [InlineData("rgb_128x32", "rgb", 128, 32, 0)]
    public void CroppedFillPreprocessingMatchesDiffusers(string name, string mask, int width, int height, int pad)
    {
        var region = VaeImageProcessor.GetCropRegion(Mask(mask), width, height, pad);
        using var image = Processor.Preprocess(Init, height, width, ResizeMode.Fill, region);
        using var maskTensor = MaskProcessor.Preprocess(Mask(mask), height, width, ResizeMode.Fill, region);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(image, Expected[$"preprocess.{name}.image"]));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(maskTensor, Expected[$"preprocess.{name}.mask"]));
    }

    [Theory]
    [InlineData(ResizeMode.Fill, "init", 64, 64)]
    [InlineData(ResizeMode.Fill, "init", 48, 120)]
    [InlineData(ResizeMode.Fill, "tall", 64, 64)]
    [InlineData(ResizeMode.Fill, "tall", 120, 40)]
    [InlineData(ResizeMode.Fill, "mask", 64, 48)]
    [InlineData(ResizeMode.Crop, "init", 64, 64)]
    [InlineData(ResizeMode.Crop, "init", 48, 120)]
    [InlineData(ResizeMode.Crop, "tall", 64, 64)]
    [InlineData(ResizeMode.Crop, "tall", 120, 40)]
    [InlineData(ResizeMode.Crop, "mask", 64, 48)]
    public void ResizeModesMatchDiffusers(ResizeMode mode, string source, int height, int width)
    {
        var image = source switch { "init" => Init, "tall" => Tall, _ => Mask("soft") };
        Same($"resize.{mode.ToString().ToLowerInvariant()}.{source}_{height}x{width}", Processor.Resize(image, height, width, mode));
    }

    [Theory]
    [InlineData("box_64x64_pad8", "box", 64, 64, 8)]
    [InlineData("soft_56x72_pad2", "soft", 56, 72, 2)]
    [InlineData("rgb_128x32", "rgb", 128, 32, 0)]
    public void OverlayWithCropMatchesDiffusers(string name, string mask, int width, int height, int pad)
    {
        var region = VaeImageProcessor.GetCropRegion(Mask(mask), width, height, pad);
        Same($"overlay.{name}", Processor.ApplyOverlay(Mask(mask), Init, Generated, region));
    }

    [Fact]
    public void OverlayWithoutCropMatchesDiffusers() =>
        Same("overlay.soft_nocrop", Processor.ApplyOverlay(Mask("soft"), Init, Generated.Resize(96, 72, ResampleFilter.Bicubic)));

    [Fact]
    public void MasksWithNothingToInpaintAndBadArgumentsAreClearErrors()
    {
        var black = new ImageBuffer(32, 32, 1);
        Assert.Contains("non-black", Assert.Throws<ArgumentException>(() => VaeImageProcessor.GetCropRegion(black, 64, 64, 4)).Message);
        Assert.Contains(">= 0", Assert.Throws<ArgumentException>(() => VaeImageProcessor.GetCropRegion(Mask("box"), 64, 64, -1)).Message);
        Assert.Contains("size of the image", Assert.Throws<ArgumentException>(() => Processor.ApplyOverlay(black, Init, Generated)).Message);
        Assert.Contains("box can't exceed", Assert.Throws<ArgumentException>(
            () => PillowResample.Resize(Init, 8, 8, ResampleFilter.Lanczos, new ResampleBox(0, 0, 97, 72))).Message);
    }
}
