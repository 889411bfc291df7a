using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
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

/// <summary><c>serve --lora</c> with a Z-Image folder: the LoRA re-fused at each request's lora_scale, equal to the command
/// line's. The LoRA (diffusion_model. names with alphas) is drawn here for the whole tiny pipeline's transformer.</summary>
public sealed class ZImageLoraServeTests : ServeWithAddOn
{
    private string? _model, _lora;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("zimage");
            TinyZImagePipelineFolder.Write(_model);
            _lora = Out("zimage-lora.safetensors");
            using var generator = new TorchSharp.torch.Generator().manual_seed(11);
            var tensors = new Dictionary<string, TorchSharp.torch.Tensor>();
            foreach (var (module, rows, columns) in new[] { ("layers.0.attention.to_q", 64L, 64L), ("layers.0.feed_forward.w1", 170L, 64L), ("noise_refiner.0.attention.out", 64L, 64L) })
            {
                tensors[$"diffusion_model.{module}.lora_down.weight"] = TorchSharp.torch.randn([4, columns], generator: generator) * 0.5;
                tensors[$"diffusion_model.{module}.lora_up.weight"] = TorchSharp.torch.randn([rows, 4], generator: generator) * 0.5;
                tensors[$"diffusion_model.{module}.alpha"] = TorchSharp.torch.tensor(2f);
            }
            DiffusersSharp.IO.SafetensorsWriter.Save(_lora, tensors);
            return new() { Model = _model, Lora = [_lora], LoraScale = ["0.7"] };
        }
    }

    [Fact]
    public async Task TheLoraScaleOfARequestEqualsTheCommandLine()
    {
        object Body(double scale) => new { prompt = "a teddy bear", steps = 2, width = 32, height = 32, seed = 5, lora_scale = scale };
        string[] Args(string scale) => ["generate", "--model", _model!, "--prompt", "a teddy bear", "--steps", "2", "--width", "32",
            "--height", "32", "--seed", "5", "--lora", _lora!, "--lora-scale", scale];
        AssertSameAsCommandLine(await ServeApi.Result(Http, Body(0.7)), Args("0.7"));
        // At another scale the LoRA is taken out and fused again: the weights are the command line's up to the float
        // rounding of the unfuse, so the 8-bit image is within one level of it.
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
