using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>serve</c> with the whole tiny Qwen-Image folder (text encoder included): text-to-image with a negative prompt,
/// image-to-image and inpainting, each equal to the command line's; options of other families refused.
/// </summary>
public sealed class QwenImageServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("qwenimage");
            TinyQwenImagePipelineFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task InfoNamesTheFamilyAndItsModes()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(("qwenimage", "QwenImagePipeline"), (info.GetProperty("family").GetString(), info.GetProperty("pipeline").GetString()));
        Assert.Equal(["txt2img", "img2img", "inpaint"], info.GetProperty("modes").EnumerateArray().Select(m => m.GetString()));
        Assert.True(info.GetProperty("negative_prompt").GetBoolean());
        Assert.False(info.GetProperty("true_cfg").GetBoolean());
    }

    [Fact]
    public async Task TextToImageEqualsTheCommandLine()
    {
        var result = await ServeApi.Result(Http, new { prompt = "a teddy bear", negative_prompt = "blurry", steps = 2, guidance = 3.0, width = 48, height = 32, seed = 5 });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a teddy bear", "--negative-prompt", "blurry", "--steps", "2",
            "--guidance", "3", "--width", "48", "--height", "32", "--seed", "5");
    }

    [Fact]
    public async Task ImageToImageAndInpaintingEqualTheCommandLine()
    {
        string input = Fixtures.Path("tiny-sd3/init_image.png"), mask = Fixtures.Path("tiny-sd3/mask.png");
        var result = await ServeApi.Result(Http, new { mode = "img2img", prompt = "a red ball", image = ServeApi.DataUrl(input), strength = 0.7, steps = 3, width = 32, height = 32, seed = 6 });
        AssertSameAsCommandLine(result, "img2img", "--model", _model!, "--prompt", "a red ball", "--image", input, "--strength", "0.7", "--steps", "3",
            "--width", "32", "--height", "32", "--seed", "6");
        result = await ServeApi.Result(Http, new
        {
            mode = "inpaint", prompt = "a red ball", image = ServeApi.DataUrl(input), mask = ServeApi.DataUrl(mask), strength = 0.9, steps = 2, width = 32, height = 32, seed = 7,
        });
        AssertSameAsCommandLine(result, "inpaint", "--model", _model!, "--prompt", "a red ball", "--image", input, "--mask", mask, "--strength", "0.9",
            "--steps", "2", "--width", "32", "--height", "32", "--seed", "7");
        Assert.Contains("true_cfg", (await ServeApi.Refusal(Http, new { prompt = "x", true_cfg = 2.0 })).Replace("--true-cfg", "true_cfg"));
        Assert.Contains("scheduler", await ServeApi.Refusal(Http, new { prompt = "x", scheduler = "euler" }));
    }
}
