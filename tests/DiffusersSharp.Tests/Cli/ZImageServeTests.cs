using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>serve</c> with a Z-Image folder (the whole tiny one, Qwen3 included): text-to-image (with cfg_normalization and
/// cfg_truncation) and image-to-image, equal to the command line's; inpainting and other families' options refused.
/// </summary>
public sealed class ZImageServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("zimage");
            TinyZImagePipelineFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task InfoNamesTheFamilyAndItsModes()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(("zimage", "ZImagePipeline"), (info.GetProperty("family").GetString(), info.GetProperty("pipeline").GetString()));
        Assert.Equal(["txt2img", "img2img"], info.GetProperty("modes").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(["img2img"], info.GetProperty("strength_modes").EnumerateArray().Select(m => m.GetString()));
        Assert.True(info.GetProperty("negative_prompt").GetBoolean());
        Assert.False(info.GetProperty("true_cfg").GetBoolean());
        Assert.Equal("FlowMatchEulerDiscreteScheduler", info.GetProperty("scheduler").GetString());
        Assert.Empty(info.GetProperty("schedulers").EnumerateArray());
    }

    [Fact]
    public async Task TextToImageEqualsTheCommandLine()
    {
        var result = await ServeApi.Result(Http, new
        {
            prompt = "a teddy bear", negative_prompt = "blurry", steps = 2, guidance = 4.0, cfg_normalization = 1.0, cfg_truncation = 0.5,
            width = 48, height = 32, seed = 5,
        });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a teddy bear", "--negative-prompt", "blurry", "--steps", "2",
            "--guidance", "4", "--cfg-normalization", "1", "--cfg-truncation", "0.5", "--width", "48", "--height", "32", "--seed", "5");
    }

    [Fact]
    public async Task ImageToImageEqualsTheCommandLineAndInpaintingIsRefused()
    {
        string input = Fixtures.Path("tiny-sd3/init_image.png");
        var result = await ServeApi.Result(Http, new { mode = "img2img", prompt = "a red ball", image = ServeApi.DataUrl(input), strength = 0.7, steps = 3, seed = 6 });
        AssertSameAsCommandLine(result, "img2img", "--model", _model!, "--prompt", "a red ball", "--image", input, "--strength", "0.7", "--steps", "3",
            "--seed", "6");
        Assert.Contains("txt2img, img2img", await ServeApi.Refusal(Http, new
        {
            mode = "inpaint", prompt = "x", image = ServeApi.DataUrl(input), mask = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/mask.png")),
        }));
        Assert.Contains("true_cfg", (await ServeApi.Refusal(Http, new { prompt = "x", true_cfg = 2.0 })).Replace("--true-cfg", "true_cfg"));
        Assert.Contains("scheduler", await ServeApi.Refusal(Http, new { prompt = "x", scheduler = "euler" }));
    }
}
