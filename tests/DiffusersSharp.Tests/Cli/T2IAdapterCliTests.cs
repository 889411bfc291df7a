using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>generate --adapter</c>: the T2I-Adapter pipelines end to end, against diffusers' images of fixture local-diffusers/t2i-adapter.</summary>
public sealed class T2IAdapterCliTests() : CliTempDirectory("t2i-adapter")
{
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/t2i-adapter/expected.safetensors");

    private static string Fixture(string name) => Fixtures.Path($"local-diffusers/t2i-adapter/{name}");

    /// <summary>The prompt embeddings diffusers got, as a --prompt-embeds file.</summary>
    private string Embeds(bool xl)
    {
        string path = Out(xl ? "embeds-xl.safetensors" : "embeds.safetensors");
        SafetensorsWriter.Save(path, xl
            ? new Dictionary<string, Tensor>
            {
                ["prompt_embeds"] = Expected["in.sdxl.prompt_embeds"], ["pooled_prompt_embeds"] = Expected["in.sdxl.pooled"],
                ["negative_prompt_embeds"] = Expected["in.sdxl.neg_prompt_embeds"], ["negative_pooled_prompt_embeds"] = Expected["in.sdxl.neg_pooled"],
            }
            : new Dictionary<string, Tensor>
            {
                ["prompt_embeds"] = Expected["in.sd15.prompt_embeds"], ["negative_prompt_embeds"] = Expected["in.sd15.neg_prompt_embeds"],
            });
        return path;
    }

    [Fact]
    public void GenerateWithAnAdapterDrawsDiffusersImage()
    {
        // The fixture's sd15 case: the size from the image (80 x 64); our PNG is diffusers' float image in 8 bits.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt-embeds", Embeds(false),
            "--adapter", Fixture("full"), "--adapter-image", Fixture("sketch.png"), "--adapter-scale", "0.8", "--steps", "8", "--seed", "11", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains($"T2I-Adapter: {Fixture("full")}:0.8", ImageFile.ReadPngText(Out())["parameters"]);
        ImageAssert.RoundedFrom(Expected["sd15.image"], ImageFile.Load(Out()));
    }

    [Fact]
    public void RepeatedAdapterOptionsPairInOrderAndTheGrayscaleAdapterGetsAGrayImage()
    {
        // The fixture's sd15_multi case: the full adapter on the RGB sketch and the in_channels-1 light adapter on the L image.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt-embeds", Embeds(false),
            "--adapter", Fixture("full"), "--adapter-image", Fixture("sketch.png"), "--adapter-scale", "0.7",
            "--adapter", Fixture("light_gray"), "--adapter-image", Fixture("depth.png"), "--adapter-scale", "1.3",
            "--width", "64", "--height", "64", "--guidance", "6", "--steps", "6", "--seed", "12", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"T2I-Adapter 1: {Fixture("full")}:0.7", parameters);
        Assert.Contains($"T2I-Adapter 2: {Fixture("light_gray")}:1.3", parameters);
        ImageAssert.RoundedFrom(Expected["sd15_multi.image"], ImageFile.Load(Out()));
    }

    [Fact]
    public void SdxlTakesTheAdapterFactor()
    {
        // The fixture's sdxl case: adapter_conditioning_factor 0.5.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sdxl/model"), "--prompt-embeds", Embeds(true),
            "--adapter", Fixture("xl"), "--adapter-image", Fixture("sketch.png"), "--adapter-scale", "0.9", "--adapter-factor", "0.5",
            "--steps", "8", "--seed", "21", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"T2I-Adapter: {Fixture("xl")}:0.9", parameters);
        Assert.Contains("Adapter factor: 0.5", parameters);
        ImageAssert.RoundedFrom(Expected["sdxl.image"], ImageFile.Load(Out()));
    }

    [Fact]
    public void AdapterOptionsAreCheckedBeforeLoading()
    {
        string sd15 = Fixtures.Path("tiny-sd15/model"), sketch = Fixture("sketch.png");
        string control = Fixtures.Path("local-diffusers/controlnet/control.png");
        string flux = Out("flux");
        TinyFluxPipelineFolder.Write(flux);
        foreach (var (verb, args, reason) in new (string, string[], string)[]
        {
            ("generate", ["--model", sd15, "--adapter-image", sketch], "--adapter-image needs --adapter"),
            ("generate", ["--model", sd15, "--adapter-factor", "0.5"], "--adapter-factor needs --adapter"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full")], "--adapter needs --adapter-image"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter", Fixture("light"), "--adapter-image", sketch],
                "2 --adapter take 2 --adapter-image"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter-image", sketch, "--adapter-scale", "1", "--adapter-scale", "2"],
                "--adapter-scale is given once for all adapters or once per --adapter (1), got 2"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter-image", sketch, "--adapter-scale", "x"], "--adapter-scale must be a finite number"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter-image", sketch, "--adapter-factor", "1.5"], "--adapter-factor must be a number in [0, 1]"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter-image", Out("missing.png")], "--adapter-image not found"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter-image", sketch, "--controlnet", Fixtures.Path("local-diffusers/controlnet/sd15"),
                "--control-image", control], "--adapter and --controlnet cannot be combined"),
            ("img2img", ["--model", sd15, "--image", sketch, "--adapter", Fixture("full"), "--adapter-image", sketch], "--adapter applies to generate only"),
            ("inpaint", ["--model", sd15, "--image", sketch, "--mask", Fixtures.Path("tiny-sd15/mask.png"), "--adapter", Fixture("full"), "--adapter-image", sketch],
                "--adapter applies to generate only"),
            ("generate", ["--model", Fixtures.TinySd3Model, "--adapter", Fixture("full"), "--adapter-image", sketch],
                "--adapter applies to SD 1.x / 2.x and SDXL models"),
            ("generate", ["--model", flux, "--adapter", Fixture("full"), "--adapter-image", sketch], "--adapter applies to SD 1.x / 2.x and SDXL models"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter-image", sketch, "--adapter-factor", "0.5"],
                "--adapter-factor does not apply with --adapter to SD 1.x / 2.x models"),
            ("generate", ["--model", sd15, "--adapter", Fixture("full"), "--adapter-image", sketch, "--guidance-rescale", "0.5"],
                "--guidance-rescale does not apply with --adapter to SD 1.x / 2.x models"),
            ("generate", ["--model", Fixtures.Path("tiny-sdxl/model"), "--adapter", Fixture("full"), "--adapter-image", sketch], "does not fit this UNet"),
            ("generate", ["--model", Fixtures.Path("tiny-sdxl/model"), "--adapter", Fixture("xl"), "--adapter-image", sketch, "--height", "72"],
                "multiples of the adapter's downscale_factor 16"),
        })
        {
            var (code, _, stderr) = CliRunner.Run([verb, "--prompt", "x", "--steps", "1", "--output", Out(), .. args]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {stderr}");
            Assert.Contains(reason, stderr);
        }
    }
}
