using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>serve</c> with an x4 upscaler folder (the tiny upscaler of fixture local-diffusers/sd-upscale with tiny-sd15's text
/// encoder): img2img only, no strength, noise_level as the command line's --noise-level; other modes and inputs the
/// upscaler lacks are refused before anything runs.
/// </summary>
public sealed class UpscaleServeTests : ServeWithAddOn
{
    private static readonly string Input = Fixtures.Path("local-diffusers/sd-upscale/input_nonsquare.png");
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("upscaler");
            TinyUpscalerFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task AnUpscaleEqualsTheCommandLinesAndOtherModesAreRefused()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(["img2img"], info.GetProperty("modes").EnumerateArray().Select(s => s.GetString()));
        Assert.Empty(info.GetProperty("strength_modes").EnumerateArray());
        Assert.True(info.GetProperty("noise_level").GetBoolean());
        Assert.False(info.GetProperty("image_guidance").GetBoolean());
        Assert.Equal(4, info.GetProperty("upscale_factor").GetInt32());
        var result = await ServeApi.Result(Http, new
        {
            mode = "img2img", prompt = "a red house", steps = 2, seed = 5, image = ServeApi.DataUrl(Input), noise_level = 60,
        });
        AssertSameAsCommandLine(result, "img2img", "--model", _model!, "--image", Input, "--prompt", "a red house", "--steps", "2",
            "--seed", "5", "--noise-level", "60");
        Assert.Equal((80, 48), (ServeApi.Image(result).Width, ServeApi.Image(result).Height));
        Assert.Contains("mode txt2img does not apply", await ServeApi.Refusal(Http, new { prompt = "x" }));
        Assert.Contains("strength (the image is noised by noise_level instead) does not apply to x4 upscalers",
            await ServeApi.Refusal(Http, new { mode = "img2img", prompt = "x", image = ServeApi.DataUrl(Input), strength = 0.5 }));
        Assert.Contains("noise_level must be at most the model's max_noise_level, 350",
            await ServeApi.Refusal(Http, new { mode = "img2img", prompt = "x", image = ServeApi.DataUrl(Input), noise_level = 400 }));
    }
}

/// <summary>
/// <c>serve</c> with a latent x2 upscaler folder (the K-UNet of fixture local-diffusers/sd-latent-upscale with tiny-sd15's
/// VAE and text encoder): img2img only, no strength nor noise_level, as the command line runs it.
/// </summary>
public sealed class LatentUpscaleServeTests : ServeWithAddOn
{
    private static readonly string Input = Fixtures.Path("tiny-sd15/init_image.png");
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("latent-upscaler");
            TinyLatentUpscalerFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task AnUpscaleEqualsTheCommandLinesAndWhatItLacksIsRefused()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(["img2img"], info.GetProperty("modes").EnumerateArray().Select(s => s.GetString()));
        Assert.Empty(info.GetProperty("strength_modes").EnumerateArray());
        Assert.False(info.GetProperty("noise_level").GetBoolean());
        Assert.Equal(2, info.GetProperty("upscale_factor").GetInt32());
        var result = await ServeApi.Result(Http, new { mode = "img2img", prompt = "a red house", steps = 2, seed = 5, image = ServeApi.DataUrl(Input) });
        AssertSameAsCommandLine(result, "img2img", "--model", _model!, "--image", Input, "--prompt", "a red house", "--steps", "2", "--seed", "5");
        Assert.Equal((128, 128), (ServeApi.Image(result).Width, ServeApi.Image(result).Height));
        Assert.Contains("noise_level applies to x4 upscalers",
            await ServeApi.Refusal(Http, new { mode = "img2img", prompt = "x", image = ServeApi.DataUrl(Input), noise_level = 20 }));
    }
}
