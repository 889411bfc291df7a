using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>serve</c> with a Chroma folder: text-to-image and image-to-image (its modes) with a negative prompt, equal to the
/// command line's; inpainting refused.
/// </summary>
public sealed class ChromaServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("chroma");
            TinyChromaPipelineFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task InfoNamesTheFamilyAndItsModes()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(("chroma", "ChromaPipeline"), (info.GetProperty("family").GetString(), info.GetProperty("pipeline").GetString()));
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
        var result = await ServeApi.Result(Http, new { prompt = "a teddy bear", negative_prompt = "blurry", steps = 2, guidance = 4.0, width = 48, height = 32, seed = 5 });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a teddy bear", "--negative-prompt", "blurry", "--steps", "2",
            "--guidance", "4", "--width", "48", "--height", "32", "--seed", "5");
    }

    [Fact]
    public async Task ImageToImageEqualsTheCommandLineAndInpaintingIsRefused()
    {
        string input = Fixtures.Path("tiny-sd3/init_image.png");
        var result = await ServeApi.Result(Http, new
        {
            mode = "img2img", prompt = "a red ball", image = ServeApi.DataUrl(input), strength = 0.7, steps = 3, width = 32, height = 32, seed = 6,
        });
        AssertSameAsCommandLine(result, "img2img", "--model", _model!, "--prompt", "a red ball", "--image", input, "--strength", "0.7", "--steps", "3",
            "--width", "32", "--height", "32", "--seed", "6");
        Assert.Contains("txt2img, img2img", await ServeApi.Refusal(Http, new
        {
            mode = "inpaint", prompt = "x", image = ServeApi.DataUrl(input), mask = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/mask.png")),
        }));
        Assert.Contains("true_cfg", (await ServeApi.Refusal(Http, new { prompt = "x", true_cfg = 2.0 })).Replace("--true-cfg", "true_cfg"));
    }
}

/// <summary><c>serve --lora</c> with a Chroma folder: the LoRA re-fused at each request's lora_scale, equal to the command line's.</summary>
public sealed class ChromaLoraServeTests : ServeWithAddOn
{
    private static readonly string Lora = Fixtures.Path("local-diffusers/chroma-lora/pytorch_lora_weights.safetensors");
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("chroma");
            TinyChromaPipelineFolder.Write(_model);
            return new() { Model = _model, Lora = [Lora], LoraScale = ["0.7"] };
        }
    }

    [Fact]
    public async Task TheLoraScaleOfARequestEqualsTheCommandLine()
    {
        object Body(double scale) => new { prompt = "a teddy bear", steps = 2, width = 32, height = 32, seed = 5, lora_scale = scale };
        string[] Args(string scale) => ["generate", "--model", _model!, "--prompt", "a teddy bear", "--steps", "2", "--width", "32",
            "--height", "32", "--seed", "5", "--lora", Lora, "--lora-scale", scale];
        AssertSameAsCommandLine(await ServeApi.Result(Http, Body(0.7)), Args("0.7"));
        // At another scale the LoRA is taken out and fused again: the weights are the command line's up to the float
        // rounding of the unfuse (as in LoraServeTests), so the 8-bit image is within one level of it.
        var other = await ServeApi.Result(Http, Body(0.3));
        string output = Out("cli-0.3.png");
        var (code, _, stderr) = CliRunner.Run([.. Args("0.3"), "--output", output]);
        Assert.True(code == 0, stderr);
        Assert.Equal(ImageFile.ReadPngText(output)["parameters"], other.GetProperty("parameters").GetString());
        var (_, max) = Images.ImageFixtures.Diff(ImageFile.Load(output), ServeApi.Image(other));
        Assert.True(max <= 1, $"the re-fused image differs from the command line's by up to {max}");
        Assert.NotEqual(ImageFile.Load(output).Pixels, ImageFile.Load(Out("cli.png")).Pixels);
    }
}
