using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>serve</c> with a Lumina-Image 2.0 folder (the whole tiny one, Gemma2 included): text-to-image with the guidance
/// options equal to the command line's; image-to-image refused.
/// </summary>
public sealed class Lumina2ServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("lumina2");
            TinyLumina2PipelineFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task InfoNamesTheFamilyAndItsModes()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(("lumina2", "Lumina2Pipeline"), (info.GetProperty("family").GetString(), info.GetProperty("pipeline").GetString()));
        Assert.Equal(["txt2img"], info.GetProperty("modes").EnumerateArray().Select(m => m.GetString()));
        Assert.True(info.GetProperty("negative_prompt").GetBoolean());
        Assert.Empty(info.GetProperty("schedulers").EnumerateArray());
    }

    [Fact]
    public async Task TextToImageEqualsTheCommandLineAndImageToImageIsRefused()
    {
        var result = await ServeApi.Result(Http, new
        {
            prompt = "a teddy bear", negative_prompt = "blurry", steps = 2, guidance = 4.0, cfg_truncation = 0.5, cfg_normalization = 0.0,
            width = 32, height = 32, seed = 5,
        });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a teddy bear", "--negative-prompt", "blurry", "--steps", "2",
            "--guidance", "4", "--cfg-truncation", "0.5", "--cfg-normalization", "0", "--width", "32", "--height", "32", "--seed", "5");
        Assert.Contains("txt2img", await ServeApi.Refusal(Http, new
        {
            mode = "img2img", prompt = "a", image = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/init_image.png")), steps = 1,
        }));
    }
}
