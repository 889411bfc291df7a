using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Cli.Web;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>generate</c>, <c>img2img</c> and <c>inpaint --pag-scale</c> (PagParityTests and PagImageToImageParityTests
/// check PAG itself against diffusers): the image is the library's PAG pipeline's, and misplaced PAG options are refused
/// before loading; serve's pag_scale / pag_layers / pag_adaptive_scale per request.</summary>
public sealed class PagCliTests() : CliTempDirectory("pag")
{
    private static readonly string Sd15 = Fixtures.Path("tiny-sd15/model"), Sdxl = Fixtures.Path("tiny-sdxl/model");

    [Fact]
    public void PagDrawsTheLibrarysImage()
    {
        var run = CliRunner.Run("generate", "--model", Sd15, "--prompt", "a red square", "--steps", "2", "--guidance", "5", "--width", "32",
            "--height", "32", "--seed", "3", "--pag-scale", "2.5", "--pag-layers", "mid, up_blocks.3", "--pag-adaptive-scale", "0.001", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("PAG: 2.5 (adaptive 0.001), layers mid,up_blocks.3", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusionComponents.FromPretrained(Sd15, new PipelineLoadOptions());
        using var pipe = new StableDiffusionPAGPipeline(components);
        using var library = pipe.Generate(new StableDiffusionPAGRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 5, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(3),
            PagScale = 2.5, PagAdaptiveScale = 0.001, PagAppliedLayers = ["mid", "up_blocks.3"],
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
        // and PAG does change the result: the latents differ (the tiny VAE's 8-bit images are too coarse to show it). It acts
        // in up_blocks.3: at 32 x 32 the mid block attends over one token, where the identity is the attention.
        var request = new StableDiffusionRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 5, Width = 32, Height = 32, OutputType = OutputType.Latent,
        };
        using var plain = StableDiffusionPipeline.FromPipe(pipe);
        using var plainLatents = plain.Generate(request with { Generator = new Generator("cpu").ManualSeed(3) });
        using var pagLatents = pipe.Generate(new StableDiffusionPAGRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 5, Width = 32, Height = 32, OutputType = OutputType.Latent,
            Generator = new Generator("cpu").ManualSeed(3), PagScale = 2.5, PagAdaptiveScale = 0.001, PagAppliedLayers = ["mid", "up_blocks.3"],
        });
        Assert.True((plainLatents.Tensor! - pagLatents.Tensor!).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void SdxlPagWithoutGuidanceDrawsTheLibrarysImage()
    {
        var run = CliRunner.Run("generate", "--model", Sdxl, "--prompt", "a red square", "--steps", "2", "--guidance", "1", "--width", "64",
            "--height", "64", "--seed", "4", "--pag-scale", "3", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("PAG: 3, layers mid", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusionComponents.FromPretrained(Sdxl, new PipelineLoadOptions());
        using var pipe = new StableDiffusionXLPAGPipeline(components);
        using var library = pipe.Generate(new StableDiffusionPAGRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 1, Width = 64, Height = 64, Generator = new Generator("cpu").ManualSeed(4),
            PagScale = 3,
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void MisplacedPagIsRefusedBeforeLoading()
    {
        string image = Out("in.png");
        ImageFile.Save(new ImageBuffer(32, 32, 3, new byte[32 * 32 * 3]), image);
        string flux = Out("flux");
        TinyFluxPipelineFolder.Write(flux);
        foreach (var (args, message) in new (string[], string)[]
        {
            (["generate", "--model", Sd15, "--pag-scale", "x"], "--pag-scale must be a finite number >= 0, got 'x'"),
            (["generate", "--model", Sd15, "--pag-scale", "-1"], "--pag-scale must be a finite number >= 0"),
            (["generate", "--model", Sd15, "--pag-scale", "3", "--pag-adaptive-scale", "-0.1"], "--pag-adaptive-scale must be a finite number >= 0"),
            (["generate", "--model", Sd15, "--pag-layers", "mid"], "--pag-layers needs --pag-scale"),
            (["generate", "--model", Sd15, "--pag-adaptive-scale", "0.1"], "--pag-adaptive-scale needs --pag-scale"),
            (["generate", "--model", Sd15, "--pag-scale", "3", "--pag-layers", "mid,,up"], "--pag-layers takes comma-separated layer names"),
            (["generate", "--model", flux, "--pag-scale", "3"], "--pag-scale applies to SD 1.x / 2.x and SDXL text-to-image, image-to-image and inpainting and to SD3 text-to-image and image-to-image"),
            (["generate", "--model", Fixtures.TinySd3Model, "--pag-scale", "3", "--skip-layers", "1"], "StableDiffusion3PAGPipeline has no skip-layer guidance"),
            (["inpaint", "--model", Fixtures.TinySd3Model, "--image", image, "--mask", image, "--pag-scale", "3"], "diffusers has no SD3 PAG inpainting pipeline"),
            (["img2img", "--model", Sd15, "--image", image, "--pag-scale", "3", "--controlnet", Fixtures.Path("local-diffusers/controlnet/sd15"),
                "--control-image", image], "--controlnet has no PAG pipeline here"),
            (["img2img", "--model", flux, "--image", image, "--pag-scale", "3"], "--pag-scale applies to SD 1.x / 2.x and SDXL"),
        })
        {
            var (code, _, stderr) = CliRunner.Run([.. args, "--prompt", "x", "--output", Out()]);
            Assert.Equal(2, code);
            Assert.Contains(message, stderr);
            Assert.DoesNotContain("loading", stderr);
            Assert.False(File.Exists(Out()));
        }
    }

    [Fact]
    public void Img2ImgPagDrawsTheLibrarysImage()
    {
        string image = Fixtures.Path("local-diffusers/pag-i2i/init.png");
        var run = CliRunner.Run("img2img", "--model", Sd15, "--image", image, "--prompt", "a red square", "--steps", "4", "--strength", "0.9",
            "--guidance", "5", "--seed", "3", "--pag-scale", "2.5", "--pag-layers", "down_blocks.1,mid", "--pag-adaptive-scale", "0.001", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("PAG: 2.5 (adaptive 0.001), layers down_blocks.1,mid", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusionComponents.FromPretrained(Sd15, new PipelineLoadOptions());
        using var pipe = new StableDiffusionPAGImg2ImgPipeline(components);
        var request = new StableDiffusionPAGImg2ImgRequest
        {
            Prompt = "a red square", Image = ImageFile.LoadRgb(image), NumInferenceSteps = 4, Strength = 0.9, GuidanceScale = 5,
            PagScale = 2.5, PagAdaptiveScale = 0.001, PagAppliedLayers = ["down_blocks.1", "mid"],
        };
        using (var library = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(3) }))
            Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
        // PAG changes the result (the latents; the tiny VAE's 8-bit images may not show it).
        using var pagLatents = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(3), OutputType = OutputType.Latent });
        using var plainLatents = pipe.Generate(request with { PagScale = 0, Generator = new Generator("cpu").ManualSeed(3), OutputType = OutputType.Latent });
        Assert.True((plainLatents.Tensor! - pagLatents.Tensor!).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void SdxlInpaintPagDrawsTheLibrarysImage()
    {
        string image = Fixtures.Path("local-diffusers/pag-i2i/init.png"), mask = Fixtures.Path("local-diffusers/pag-i2i/mask.png");
        var run = CliRunner.Run("inpaint", "--model", Sdxl, "--image", image, "--mask", mask, "--prompt", "a red square", "--steps", "3",
            "--guidance", "4", "--width", "80", "--height", "64", "--seed", "5", "--pag-scale", "3", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("PAG: 3, layers mid", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusionComponents.FromPretrained(Sdxl, new PipelineLoadOptions());
        using var pipe = new StableDiffusionXLPAGInpaintPipeline(components);
        using var library = pipe.Generate(new StableDiffusionPAGInpaintRequest
        {
            Prompt = "a red square", Image = ImageFile.LoadRgb(image), MaskImage = ImageFile.Load(mask), NumInferenceSteps = 3, GuidanceScale = 4,
            Width = 80, Height = 64, Generator = new Generator("cpu").ManualSeed(5), PagScale = 3,
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);

        // SD 1.x / 2.x PAG inpainting refuses --padding-mask-crop, as diffusers' StableDiffusionPAGInpaintPipeline does.
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", Sd15, "--image", image, "--mask", mask, "--prompt", "x", "--steps", "1",
            "--pag-scale", "3", "--padding-mask-crop", "4", "--output", Out("refused.png"));
        Assert.NotEqual(0, code);
        Assert.Contains("padding_mask_crop is not supported by Stable Diffusion 1.x / 2.x PAG inpainting", stderr);
        Assert.False(File.Exists(Out("refused.png")));
    }

    [Fact]
    public void Sd3Img2ImgPagDrawsTheLibrarysImage()
    {
        string image = Fixtures.Path("tiny-sd3/init_image.png");
        var run = CliRunner.Run("img2img", "--model", Fixtures.TinySd3Model, "--image", image, "--prompt", "a red square", "--steps", "3",
            "--strength", "0.8", "--guidance", "4", "--seed", "6", "--pag-scale", "2", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("PAG: 2, layers blocks.1", ImageFile.ReadPngText(Out())["parameters"]);
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions());
        using var pipe = new StableDiffusion3PAGImg2ImgPipeline(components);
        using var library = pipe.Generate(new StableDiffusion3PAGImg2ImgRequest
        {
            Prompt = "a red square", Image = ImageFile.LoadRgb(image), NumInferenceSteps = 3, Strength = 0.8, GuidanceScale = 4,
            Generator = new Generator("cpu").ManualSeed(6), PagScale = 2,
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void Sd3PagDrawsTheLibrarysImage()
    {
        // StableDiffusion3PagParityTests checks the pipeline against diffusers; here the CLI's wiring: the SD3 PAG pipeline with
        // its default layers (blocks.1), the scales, CFG, the prompt through tiny-sd3's three encoders.
        var run = CliRunner.Run("generate", "--model", Fixtures.TinySd3Model, "--prompt", "a red square", "--steps", "2", "--guidance", "4",
            "--width", "64", "--height", "64", "--seed", "6", "--pag-scale", "2.5", "--pag-adaptive-scale", "0.001", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("PAG: 2.5 (adaptive 0.001), layers blocks.1", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions());
        using var pipe = new StableDiffusion3PAGPipeline(components);
        var request = new StableDiffusion3PAGRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 4, Width = 64, Height = 64, PagScale = 2.5, PagAdaptiveScale = 0.001,
        };
        using (var library = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(6) }))
            Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
        // PAG changes the result (the latents; the tiny VAE's 8-bit images may not show it).
        using var pagLatents = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(6), OutputType = OutputType.Latent });
        using var plainLatents = pipe.Generate(request with { PagScale = 0, Generator = new Generator("cpu").ManualSeed(6), OutputType = OutputType.Latent });
        Assert.True((plainLatents.Tensor! - pagLatents.Tensor!).abs().max().item<float>() > 1e-3);

        // An SD3.5 dual-attention block's attn2 (block 0 of tiny-sd3) is refused before compute.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.TinySd3Model, "--prompt", "x", "--steps", "1", "--width", "64",
            "--height", "64", "--pag-scale", "3", "--pag-layers", "blocks.0", "--output", Out("refused.png"));
        Assert.NotEqual(0, code);
        Assert.Contains("transformer_blocks.0.attn2", stderr);
        Assert.False(File.Exists(Out("refused.png")));
    }

    [Fact]
    public void UnknownPagLayerIsRefusedBeforeCompute()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Sd15, "--prompt", "x", "--steps", "1", "--width", "32", "--height", "32",
            "--pag-scale", "3", "--pag-layers", "down.block_1", "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("Cannot find PAG layer to set attention processor for: down.block_1", stderr);
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public async Task ServeAppliesPagPerRequest()
    {
        var quiet = new CliOutput(TextWriter.Null, TextWriter.Null);
        using var model = LoadedModel.Load(quiet, new ServeCommand.Settings { Model = Sd15 }, default);
        await using var server = await WebServer.StartAsync(model, quiet, "127.0.0.1", 0, default);
        using var http = new HttpClient { BaseAddress = server.Address };
        Assert.True((await http.GetFromJsonAsync<JsonElement>("api/info")).GetProperty("pag").GetBoolean());
        object Body(double? pagScale, string[]? layers = null, double? adaptive = null, string mode = "txt2img") => new
        {
            prompt = "a red square", steps = 2, width = 32, height = 32, seed = 3, guidance = 5, mode,
            pag_scale = pagScale, pag_layers = layers, pag_adaptive_scale = adaptive,
        };

        var served = await ServeApi.Result(http, Body(2.0, ["up_blocks.3"], 0.002));
        Assert.Contains("PAG: 2 (adaptive 0.002), layers up_blocks.3", served.GetProperty("parameters").GetString());
        using var components = StableDiffusionComponents.FromPretrained(Sd15, new PipelineLoadOptions());
        using var pipe = new StableDiffusionPAGPipeline(components);
        using var library = pipe.Generate(new StableDiffusionPAGRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 5, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(3),
            PagScale = 2.0, PagAdaptiveScale = 0.002, PagAppliedLayers = ["up_blocks.3"],
        });
        Assert.Equal(library.Images![0].Pixels, ServeApi.Image(served).Pixels);
        // A request without it runs without PAG (nothing of the last request's stays on the UNet).
        Assert.DoesNotContain("PAG", (await ServeApi.Result(http, Body(null))).GetProperty("parameters").GetString());
        Assert.Contains("pag_layers needs pag_scale", await ServeApi.Refusal(http, Body(null, ["mid"])));
        Assert.Contains("pag_scale must be a finite number >= 0", await ServeApi.Refusal(http, Body(-1)));
        var info = await http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(["txt2img", "img2img", "inpaint"], info.GetProperty("pag_modes").EnumerateArray().Select(m => m.GetString()));

        // img2img and inpaint take PAG too: the library's PAG image-to-image / inpainting pipelines' images.
        string image = Fixtures.Path("local-diffusers/pag-i2i/init.png"), mask = Fixtures.Path("local-diffusers/pag-i2i/mask.png");
        var img2img = await ServeApi.Result(http, new
        {
            mode = "img2img", prompt = "a red square", image = ServeApi.DataUrl(image), strength = 0.9, steps = 4, seed = 3, guidance = 5,
            pag_scale = 2.0, pag_layers = new[] { "down_blocks.1" },
        });
        Assert.Contains("PAG: 2, layers down_blocks.1", img2img.GetProperty("parameters").GetString());
        using var i2iPipe = StableDiffusionPAGImg2ImgPipeline.FromPipe(pipe);
        using (var i2iLibrary = i2iPipe.Generate(new StableDiffusionPAGImg2ImgRequest
        {
            Prompt = "a red square", Image = ImageFile.LoadRgb(image), Strength = 0.9, NumInferenceSteps = 4, GuidanceScale = 5,
            Generator = new Generator("cpu").ManualSeed(3), PagScale = 2.0, PagAppliedLayers = ["down_blocks.1"],
        }))
            Assert.Equal(i2iLibrary.Images![0].Pixels, ServeApi.Image(img2img).Pixels);
        var inpaint = await ServeApi.Result(http, new
        {
            mode = "inpaint", prompt = "a red square", image = ServeApi.DataUrl(image), mask = ServeApi.DataUrl(mask), steps = 3, seed = 4,
            guidance = 5, width = 80, height = 64, pag_scale = 3.0, pag_adaptive_scale = 0.001,
        });
        Assert.Contains("PAG: 3 (adaptive 0.001), layers mid", inpaint.GetProperty("parameters").GetString());
        using var inpaintPipe = StableDiffusionPAGInpaintPipeline.FromPipe(pipe);
        using (var inpaintLibrary = inpaintPipe.Generate(new StableDiffusionPAGInpaintRequest
        {
            Prompt = "a red square", Image = ImageFile.LoadRgb(image), MaskImage = ImageFile.Load(mask), NumInferenceSteps = 3, GuidanceScale = 5,
            Width = 80, Height = 64, Generator = new Generator("cpu").ManualSeed(4), PagScale = 3.0, PagAdaptiveScale = 0.001,
        }))
            Assert.Equal(inpaintLibrary.Images![0].Pixels, ServeApi.Image(inpaint).Pixels);
    }

    [Fact]
    public async Task ServeAppliesSd3PagPerRequest()
    {
        var quiet = new CliOutput(TextWriter.Null, TextWriter.Null);
        using var model = LoadedModel.Load(quiet, new ServeCommand.Settings { Model = Fixtures.TinySd3Model }, default);
        await using var server = await WebServer.StartAsync(model, quiet, "127.0.0.1", 0, default);
        using var http = new HttpClient { BaseAddress = server.Address };
        var info = await http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.True(info.GetProperty("pag").GetBoolean());
        Assert.Equal("blocks.1", info.GetProperty("pag_default_layers")[0].GetString());
        Assert.Equal(["txt2img", "img2img"], info.GetProperty("pag_modes").EnumerateArray().Select(m => m.GetString()));
        // diffusers has no SD3 PAG inpainting pipeline: refused in the API's words.
        Assert.Contains("diffusers has no SD3 PAG inpainting pipeline", await ServeApi.Refusal(http, new
        {
            mode = "inpaint", prompt = "x", image = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/init_image.png")),
            mask = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/mask.png")), steps = 1, pag_scale = 3.0,
        }));
        var served = await ServeApi.Result(http, new
        {
            prompt = "a red square", steps = 2, width = 64, height = 64, seed = 7, guidance = 3, mode = "txt2img", pag_scale = 2.0,
            pag_layers = new[] { "transformer_blocks.1.attn$" },
        });
        Assert.Contains("PAG: 2, layers transformer_blocks.1.attn$", served.GetProperty("parameters").GetString());
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions());
        using var pipe = new StableDiffusion3PAGPipeline(components);
        using var library = pipe.Generate(new StableDiffusion3PAGRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 3, Width = 64, Height = 64, Generator = new Generator("cpu").ManualSeed(7),
            PagScale = 2.0, PagAppliedLayers = ["transformer_blocks.1.attn$"],
        });
        Assert.Equal(library.Images![0].Pixels, ServeApi.Image(served).Pixels);
    }
}
