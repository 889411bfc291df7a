using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>--controlnet</c> with a ControlNet-Union folder and <c>--control-mode</c>: the union pipelines end to end,
/// against diffusers' images of fixture local-diffusers/controlnet-union.</summary>
public sealed class ControlNetUnionCliTests() : CliTempDirectory("controlnet-union")
{
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/controlnet-union/expected.safetensors");
    private static readonly string Union = Fixtures.Path("local-diffusers/controlnet-union/union");
    private static readonly string Control = Fixtures.Path("local-diffusers/controlnet/control.png");
    private static readonly string Control2 = Fixtures.Path("local-diffusers/controlnet-modes/control2.png");
    private static readonly string Init = Fixtures.Path("local-diffusers/controlnet-modes/init.png");
    private static readonly string Mask = Fixtures.Path("local-diffusers/controlnet-modes/mask.png");
    private static readonly string Repaint = Fixtures.Path("local-diffusers/controlnet-union/repaint.png");

    /// <summary>The fixture's prompt embeddings, as a --prompt-embeds file.</summary>
    private string Embeds()
    {
        string embeds = Out("embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = Expected["in.prompt_embeds"], ["pooled_prompt_embeds"] = Expected["in.pooled"],
            ["negative_prompt_embeds"] = Expected["in.neg_prompt_embeds"], ["negative_pooled_prompt_embeds"] = Expected["in.neg_pooled"],
        });
        return embeds;
    }

    [Fact]
    public void GenerateWithTwoModesDrawsDiffusersImage()
    {
        // The t2i_two case: one ControlNet-Union, two conditions by name, a scale and a window per condition.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sdxl/model"), "--prompt-embeds", Embeds(),
            "--controlnet", Union, "--control-image", Control, "--control-mode", "canny", "--control-image", Control2, "--control-mode", "depth",
            "--controlnet-scale", "0.6", "--controlnet-scale", "1.1", "--control-start", "0", "--control-start", "0.3",
            "--control-end", "0.7", "--control-end", "1", "--steps", "10", "--seed", "32", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"ControlNet 1: {Union} mode 3:0.6 [0, 0.7]", parameters);
        Assert.Contains($"ControlNet 2: {Union} mode 1:1.1 [0.3, 1]", parameters);
        ImageAssert.RoundedFrom(Expected["t2i_two.image"], ImageFile.Load(Out()));
    }

    [Fact]
    public void TwoControlNetUnionsTakeOneImageAndModeEach()
    {
        // The t2i_multi case: the same ControlNet-Union twice (diffusers' MultiControlNetUnionModel), modes by index.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sdxl/model"), "--prompt-embeds", Embeds(),
            "--controlnet", Union, "--control-image", Control, "--control-mode", "3", "--controlnet-scale", "0.5", "--control-end", "0.8",
            "--controlnet", Union, "--control-image", Control2, "--control-mode", "1", "--controlnet-scale", "0.9", "--control-end", "1",
            "--control-start", "0", "--control-start", "0.2", "--steps", "8", "--seed", "34", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet 2: {Union} mode 1:0.9 [0.2, 1]", ImageFile.ReadPngText(Out())["parameters"]);
        ImageAssert.RoundedFrom(Expected["t2i_multi.image"], ImageFile.Load(Out()));
    }

    [Fact]
    public void Img2ImgAndInpaintTakeControlModes()
    {
        // The img2img (tile, default scale 0.8) and inpaint (repaint, default strength and scale 1.0) cases.
        string embeds = Embeds();
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", Fixtures.Path("tiny-sdxl/model"), "--prompt-embeds", embeds, "--image", Init,
            "--controlnet", Union, "--control-image", Init, "--control-mode", "tile", "--strength", "0.6", "--steps", "10", "--seed", "41",
            "--output", Out("i2i.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet: {Union} mode 6:0.8 [0, 1]", ImageFile.ReadPngText(Out("i2i.png"))["parameters"]);
        ImageAssert.RoundedFrom(Expected["img2img.image"], ImageFile.Load(Out("i2i.png")));
        (code, _, stderr) = CliRunner.Run("inpaint", "--model", Fixtures.Path("tiny-sdxl/model"), "--prompt-embeds", embeds, "--image", Init,
            "--mask", Mask, "--controlnet", Union, "--control-image", Repaint, "--control-mode", "repaint", "--steps", "8", "--seed", "51",
            "--output", Out("inp.png"));
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out("inp.png"))["parameters"];
        Assert.Contains($"ControlNet: {Union} mode 7:1 [0, 1]", parameters);
        Assert.Contains("Denoising strength: 0.9999", parameters);
        ImageAssert.RoundedFrom(Expected["inpaint.image"], ImageFile.Load(Out("inp.png")));
    }

    [Fact]
    public void ControlModeOptionsAreCheckedBeforeLoading()
    {
        string sdxl = Fixtures.Path("tiny-sdxl/model"), plain = Fixtures.Path("local-diffusers/controlnet/sdxl");
        foreach (var (args, reason) in new (string[], string)[]
        {
            (["--model", sdxl, "--control-mode", "canny"], "--control-mode needs --controlnet"),
            (["--model", sdxl, "--controlnet", Union, "--control-image", Control, "--control-image", Control2, "--control-mode", "canny"],
                "--control-mode is given once per --control-image (2), in the same order; got 1"),
            (["--model", sdxl, "--controlnet", Union, "--control-image", Control, "--control-mode", "pose"], "--control-mode: 'pose' is not a ControlNet-Union control mode"),
            (["--model", sdxl, "--controlnet", Union, "--control-image", Control, "--control-image", Control2, "--control-mode", "3", "--control-mode", "1",
                "--controlnet-scale", "1", "--controlnet-scale", "1", "--controlnet-scale", "1"],
                "--controlnet-scale is given once for all ControlNets or once per --control-image (2), got 3"),
            (["--model", sdxl, "--controlnet", Union, "--controlnet", Union, "--control-image", Control, "--control-image", Control2,
                "--control-image", Control, "--control-mode", "3", "--control-mode", "1", "--control-mode", "1"], "2 --controlnet take 2 --control-image"),
            (["--model", sdxl, "--controlnet", plain, "--control-image", Control, "--control-mode", "canny"],
                $"--control-mode applies to ControlNet-Union models; {plain} is a plain ControlNet"),
            (["--model", sdxl, "--controlnet", Union, "--control-image", Control], $"{Union} is a ControlNet-Union: give the control type of each --control-image"),
            (["--model", sdxl, "--controlnet", Union, "--control-image", Control, "--control-mode", "9"], $"--control-mode 9: {Union} knows 8 control types (0 to 7)"),
            (["--model", sdxl, "--controlnet", Union, "--controlnet", plain, "--control-image", Control, "--control-image", Control, "--control-mode", "3",
                "--control-mode", "3"], "is a plain ControlNet"),
            (["--model", Fixtures.TinySd3Model, "--controlnet", Fixtures.Path("local-diffusers/sd3-controlnet/controlnet"), "--control-image", Control,
                "--control-mode", "canny"], "--control-mode applies to SDXL ControlNet-Union models"),
            (["--model", Fixtures.Path("tiny-sd15/model"), "--controlnet", Union, "--control-image", Control, "--control-mode", "canny"],
                "ControlNet-Union models steer SDXL"),
            (["--model", sdxl, "--controlnet", Union, "--control-image", Control, "--control-mode", "canny", "--guess-mode"], "Guess mode"),
        })
        {
            var (code, _, stderr) = CliRunner.Run(["generate", "--prompt", "x", "--steps", "1", "--output", Out(), .. args]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {stderr}");
            Assert.Contains(reason, stderr);
        }
    }
}
