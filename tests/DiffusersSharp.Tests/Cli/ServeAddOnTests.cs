using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Cli.Web;
using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>A served model with one loader-side add-on (a ControlNet-Union or T2I-Adapters), over real HTTP.</summary>
public abstract class ServeWithAddOn : IAsyncLifetime
{
    private protected static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private readonly string _dir = Directory.CreateTempSubdirectory("serve-add-on").FullName;
    private LoadedModel? _model;
    private WebServer? _server;
    private HttpClient? _http;

    private protected HttpClient Http => _http!;

    private protected abstract ServeCommand.Settings Settings { get; }

    private protected string Out(string name) => Path.Combine(_dir, name);

    public async Task InitializeAsync()
    {
        _model = LoadedModel.Load(Quiet, Settings, default);
        _server = await WebServer.StartAsync(_model, Quiet, "127.0.0.1", 0, default);
        _http = new HttpClient { BaseAddress = _server.Address };
    }

    public async Task DisposeAsync()
    {
        _http?.Dispose();
        if (_server is not null) await _server.DisposeAsync();
        _model?.Dispose();
        Directory.Delete(_dir, true);
    }

    /// <summary>Runs the CLI with <paramref name="args"/> (the verb first) and checks that its image and parameters equal the API result's.</summary>
    private protected void AssertSameAsCommandLine(JsonElement result, params string[] args)
    {
        string output = Out("cli.png");
        var (code, _, stderr) = CliRunner.Run([.. args, "--output", output]);
        Assert.True(code == 0, stderr);
        Assert.Equal(ImageFile.ReadPngText(output)["parameters"], result.GetProperty("parameters").GetString());
        Assert.Equal(ImageFile.Load(output).Pixels, ServeApi.Image(result).Pixels);
    }
}

/// <summary>
/// <c>serve --controlnet</c> with the tiny SDXL ControlNet-Union of local-diffusers/controlnet-union: control_mode names
/// each control image's type, one union takes several conditions, and the requests equal the command line's.
/// </summary>
public sealed class ControlNetUnionServeTests : ServeWithAddOn
{
    private static readonly string Union = Fixtures.Path("local-diffusers/controlnet-union/union");
    private static readonly string Model = Fixtures.Path("tiny-sdxl/model");
    private static readonly string Control = Fixtures.Path("local-diffusers/controlnet/control.png");
    private static readonly string Control2 = Fixtures.Path("local-diffusers/controlnet-modes/control2.png");

    private protected override ServeCommand.Settings Settings => new() { Model = Model, ControlNet = [Union] };

    [Fact]
    public async Task InfoGivesTheUnionsControlTypes()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(8, Assert.Single(info.GetProperty("controlnet_union_types").EnumerateArray()).GetInt32());
        Assert.Equal(3, info.GetProperty("control_mode_names").GetProperty("canny").GetInt32());
        Assert.Empty(info.GetProperty("adapters").EnumerateArray());
    }

    [Fact]
    public async Task TwoConditionsOnOneUnionEqualTheCommandLines()
    {
        var result = await ServeApi.Result(Http, new
        {
            prompt = "edges", steps = 3, width = 64, height = 64, seed = 5,
            control_images = new[] { ServeApi.DataUrl(Control), ServeApi.DataUrl(Control2) }, control_mode = new object[] { "canny", 1 },
            controlnet_scale = new[] { 0.6, 1.1 }, control_start = new[] { 0.0, 0.3 }, control_end = new[] { 0.7, 1.0 },
        });
        Assert.Contains($"ControlNet 2: {Union} mode 1:1.1 [0.3, 1]", result.GetProperty("parameters").GetString());
        AssertSameAsCommandLine(result, "generate", "--model", Model, "--prompt", "edges", "--controlnet", Union,
            "--control-image", Control, "--control-mode", "canny", "--control-image", Control2, "--control-mode", "1",
            "--controlnet-scale", "0.6", "--controlnet-scale", "1.1", "--control-start", "0", "--control-start", "0.3",
            "--control-end", "0.7", "--control-end", "1", "--steps", "3", "--width", "64", "--height", "64", "--seed", "5");
    }

    /// <summary>The page's form of a union's condition rows: lists in row order, types by index, an empty start / end
    /// filled with its default, no scale (the pipeline's default).</summary>
    [Fact]
    public async Task ThreeConditionsAsThePageSendsThemEqualTheCommandLines()
    {
        var result = await ServeApi.Result(Http, new
        {
            prompt = "edges", steps = 3, width = 64, height = 64, seed = 9,
            control_images = new[] { ServeApi.DataUrl(Control), ServeApi.DataUrl(Control2), ServeApi.DataUrl(Control) }, control_mode = new[] { 3, 1, 6 },
            control_start = new[] { 0.0, 0.2, 0.0 }, control_end = new[] { 1.0, 1.0, 0.8 },
        });
        Assert.Contains($"ControlNet 3: {Union} mode 6:1 [0, 0.8]", result.GetProperty("parameters").GetString());
        AssertSameAsCommandLine(result, "generate", "--model", Model, "--prompt", "edges", "--controlnet", Union,
            "--control-image", Control, "--control-mode", "3", "--control-image", Control2, "--control-mode", "1", "--control-image", Control, "--control-mode", "6",
            "--control-start", "0", "--control-start", "0.2", "--control-start", "0", "--control-end", "1", "--control-end", "1", "--control-end", "0.8",
            "--steps", "3", "--width", "64", "--height", "64", "--seed", "9");
    }

    [Fact]
    public async Task AUnionSteersImageToImage()
    {
        var result = await ServeApi.Result(Http, new
        {
            mode = "img2img", prompt = "tiles", steps = 4, strength = 0.5, seed = 6, image = ServeApi.DataUrl(Control2),
            control_image = ServeApi.DataUrl(Control2), control_mode = "tile",
        });
        Assert.Contains($"ControlNet: {Union} mode 6", result.GetProperty("parameters").GetString());
    }

    [Theory]
    [InlineData("no-mode", "give the control type of each control image with control_mode")]
    [InlineData("too-high", "knows 8 control types (0 to 7)")]
    [InlineData("unknown", "canny")]
    [InlineData("count", "control_mode is given once per control_image (2), in the same order; got 1")]
    [InlineData("mode-alone", "control_mode needs control_image")]
    [InlineData("fraction", "control_mode must be a control type (a name such as canny, or an index)")]
    public async Task ControlModesAreCheckedBeforeAnythingRuns(string kind, string reason)
    {
        string control = ServeApi.DataUrl(Control);
        object body = kind switch
        {
            "no-mode" => new { prompt = "x", control_image = control },
            "too-high" => new { prompt = "x", control_image = control, control_mode = 9 } as object,
            "unknown" => new { prompt = "x", control_image = control, control_mode = "sketchy" },
            "count" => new { prompt = "x", control_images = new[] { control, control }, control_mode = new[] { "canny" } },
            "fraction" => new { prompt = "x", control_image = control, control_mode = 1.5 } as object,
            _ => new { prompt = "x", control_mode = "depth" },
        };
        Assert.Contains(reason, await ServeApi.Refusal(Http, body));
    }
}

/// <summary>
/// <c>serve --adapter</c> with the tiny T2I-Adapters of local-diffusers/t2i-adapter on tiny-sd15: text-to-image takes an
/// adapter image per adapter and equals the command line's; other modes and stray fields are refused before anything runs.
/// </summary>
public sealed class T2IAdapterServeTests : ServeWithAddOn
{
    private static string Fixture(string name) => Fixtures.Path($"local-diffusers/t2i-adapter/{name}");

    private static readonly string Model = Fixtures.Path("tiny-sd15/model");

    private protected override ServeCommand.Settings Settings => new() { Model = Model, Adapter = [Fixture("full"), Fixture("light_gray")] };

    [Fact]
    public async Task InfoNamesTheAdaptersAndTheirMode()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal([Fixture("full"), Fixture("light_gray")], info.GetProperty("adapters").EnumerateArray().Select(s => s.GetString()));
        Assert.Equal(["txt2img"], info.GetProperty("adapter_modes").EnumerateArray().Select(s => s.GetString()));
        Assert.False(info.GetProperty("adapter_factor").GetBoolean()); // SD 1.x's adapter pipeline has none
    }

    [Fact]
    public async Task TwoAdaptersEqualTheCommandLines()
    {
        var result = await ServeApi.Result(Http, new
        {
            prompt = "a sketch", steps = 3, width = 64, height = 64, seed = 8,
            adapter_images = new[] { ServeApi.DataUrl(Fixture("sketch.png")), ServeApi.DataUrl(Fixture("depth.png")) }, adapter_scale = new[] { 0.7, 1.3 },
        });
        Assert.Contains("T2I-Adapter", result.GetProperty("parameters").GetString());
        AssertSameAsCommandLine(result, "generate", "--model", Model, "--prompt", "a sketch",
            "--adapter", Fixture("full"), "--adapter-image", Fixture("sketch.png"), "--adapter-scale", "0.7",
            "--adapter", Fixture("light_gray"), "--adapter-image", Fixture("depth.png"), "--adapter-scale", "1.3",
            "--steps", "3", "--width", "64", "--height", "64", "--seed", "8");
        // Without adapter images the plain pipeline runs.
        var plain = await ServeApi.Result(Http, new { prompt = "a sketch", steps = 3, width = 64, height = 64, seed = 8 });
        Assert.DoesNotContain("T2I-Adapter", plain.GetProperty("parameters").GetString());
    }

    [Theory]
    [InlineData("one", "this server has 2 T2I-Adapters")]
    [InlineData("img2img", "adapter_image applies to txt2img only")]
    [InlineData("scale-alone", "adapter_scale needs adapter_image")]
    [InlineData("factor", "adapter_factor does not apply with adapter to SD 1.x / 2.x models")]
    [InlineData("control", "control_image needs a ControlNet, and this server has none")]
    public async Task AdapterFieldsAreCheckedBeforeAnythingRuns(string kind, string reason)
    {
        string sketch = ServeApi.DataUrl(Fixture("sketch.png"));
        object body = kind switch
        {
            "one" => new { prompt = "x", adapter_image = sketch },
            "img2img" => new { prompt = "x", mode = "img2img", image = sketch, adapter_images = new[] { sketch, sketch } } as object,
            "scale-alone" => new { prompt = "x", adapter_scale = 0.5 },
            "factor" => new { prompt = "x", adapter_images = new[] { sketch, sketch }, adapter_factor = 0.5 },
            _ => new { prompt = "x", control_image = sketch },
        };
        Assert.Contains(reason, await ServeApi.Refusal(Http, body));
    }

    [Fact]
    public void ServeRefusesAdaptersWithControlNetsBeforeLoading()
    {
        var (code, _, stderr) = CliRunner.Run("serve", "--model", Model, "--adapter", Fixture("full"),
            "--controlnet", Fixtures.Path("local-diffusers/controlnet/sd15"), "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("--adapter and --controlnet cannot be combined", stderr);
    }
}

/// <summary>
/// <c>serve</c> with a FLUX.1 control folder (FluxControlPipeline): every request takes the model's control_image, and
/// equals the command line's; the ControlNet fields are refused.
/// </summary>
public sealed class FluxControlServeTests : ServeWithAddOn
{
    private static readonly string Control = Fixtures.Path("local-diffusers/controlnet/control.png");
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("canny");
            TinyFluxPipelineFolder.Write(_model, seed: 4, pipelineClass: DiffusersSharp.Pipelines.Flux.FluxComponents.ControlPipelineClass, inChannels: 128);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task TheControlImageSteersEveryModeAsOnTheCommandLine()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.True(info.GetProperty("takes_control_image").GetBoolean());
        Assert.False(info.GetProperty("negative_prompt").GetBoolean()); // no true CFG in diffusers' FluxControlPipeline
        Assert.False(info.GetProperty("true_cfg").GetBoolean());
        var result = await ServeApi.Result(Http, new
        {
            prompt = "edges", steps = 2, width = 48, height = 32, seed = 3, control_image = ServeApi.DataUrl(Control),
        });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "edges", "--control-image", Control, "--steps", "2",
            "--width", "48", "--height", "32", "--seed", "3");
        var edit = await ServeApi.Result(Http, new
        {
            mode = "img2img", prompt = "edges", steps = 2, strength = 0.5, seed = 3, width = 48, height = 32,
            image = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/init_image.png")), control_image = ServeApi.DataUrl(Control),
        });
        Assert.Contains("Mode: img2img", edit.GetProperty("parameters").GetString());
    }

    [Theory]
    [InlineData("none", "this server's model is a FLUX.1 control model")]
    [InlineData("scale", "controlnet_scale applies to ControlNets")]
    public async Task ControlFieldsAreCheckedBeforeAnythingRuns(string kind, string reason)
    {
        object body = kind == "none" ? new { prompt = "x" } : new { prompt = "x", control_image = ServeApi.DataUrl(Control), controlnet_scale = 0.5 };
        Assert.Contains(reason, await ServeApi.Refusal(Http, body));
    }
}

/// <summary>
/// <c>serve</c> with a FLUX.1-dev-style folder and a FLUX.1-Canny / Depth-style control LoRA (<c>--lora</c>): a FLUX.1
/// control model, as the command line makes it; a new lora_scale takes the LoRA out (x_embedder narrows again) and fuses
/// it back at that scale.
/// </summary>
public sealed class FluxControlLoraServeTests : ServeWithAddOn
{
    private static readonly string Control = Fixtures.Path("local-diffusers/controlnet/control.png");
    private static readonly string Lora = Fixtures.Path("local-diffusers/flux-lora-layouts/control.safetensors");
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("dev");
            TinyFluxPipelineFolder.Write(_model, seed: 4);
            return new() { Model = _model, Lora = [Lora], LoraScale = ["0.75"] };
        }
    }

    [Fact]
    public async Task AControlLoraServesTheControlPipelineAtAnyScale()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.True(info.GetProperty("takes_control_image").GetBoolean());
        Assert.Equal("FluxControlPipeline", info.GetProperty("pipeline").GetString());
        foreach (double scale in new[] { 0.75, 0.5 })
        {
            var result = await ServeApi.Result(Http, new
            {
                prompt = "edges", steps = 2, width = 48, height = 32, seed = 3, control_image = ServeApi.DataUrl(Control), lora_scale = scale,
            });
            AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "edges", "--control-image", Control, "--steps", "2",
                "--width", "48", "--height", "32", "--seed", "3", "--lora", Lora, "--lora-scale", scale.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }
}

/// <summary>
/// <c>serve</c> with a PixArt-Σ folder: text-to-image only (its modes), with a negative prompt and diffusers' default
/// resolution binning, equal to the command line's.
/// </summary>
public sealed class PixArtServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("pixart");
            TinyPixArtPipelineFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task TextToImageEqualsTheCommandLine()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(["txt2img"], info.GetProperty("modes").EnumerateArray().Select(m => m.GetString()));
        Assert.True(info.GetProperty("negative_prompt").GetBoolean());
        Assert.Equal(("pixart", "DPMSolverMultistepScheduler"), (info.GetProperty("family").GetString(), info.GetProperty("scheduler").GetString()));
        var result = await ServeApi.Result(Http, new { prompt = "a teddy bear", negative_prompt = "blurry", steps = 2, width = 120, height = 200, seed = 5 });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a teddy bear", "--negative-prompt", "blurry", "--steps", "2",
            "--width", "120", "--height", "200", "--seed", "5");
        Assert.Contains("img2img", await ServeApi.Refusal(Http, new
        {
            mode = "img2img", prompt = "x", image = ServeApi.DataUrl(Fixtures.Path("tiny-sdxl/init_image.png")),
        }));
    }
}

/// <summary>
/// <c>serve</c> with an InstructPix2Pix folder (SD 1.x, or SDXL with a size): img2img only, no strength, image_guidance as
/// the command line's.
/// </summary>
public abstract class InstructPix2PixServeTestsBase : ServeWithAddOn
{
    private string? _model;

    /// <summary>The edit's input image.</summary>
    private protected abstract string Input { get; }

    /// <summary>Options beside the edit's, the same on the page and the command line (a size for SDXL).</summary>
    private protected abstract (object? Width, object? Height) Size { get; }

    /// <summary>Writes the model folder.</summary>
    private protected abstract void WriteModel(string folder);

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("pix2pix");
            WriteModel(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task AnEditEqualsTheCommandLinesAndOtherModesAreRefused()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(["img2img"], info.GetProperty("modes").EnumerateArray().Select(s => s.GetString()));
        Assert.Empty(info.GetProperty("strength_modes").EnumerateArray());
        Assert.True(info.GetProperty("image_guidance").GetBoolean());
        var (width, height) = Size;
        var result = await ServeApi.Result(Http, new
        {
            mode = "img2img", prompt = "make it snowy", steps = 3, seed = 5, image = ServeApi.DataUrl(Input), image_guidance = 1.2, width, height,
        });
        string[] size = width is null ? [] : ["--width", $"{width}", "--height", $"{height}"];
        AssertSameAsCommandLine(result, ["img2img", "--model", _model!, "--image", Input, "--prompt", "make it snowy", "--steps", "3",
            "--seed", "5", "--image-guidance", "1.2", .. size]);
        Assert.Contains("mode txt2img does not apply", await ServeApi.Refusal(Http, new { prompt = "x" }));
        Assert.Contains("strength does not apply to InstructPix2Pix",
            await ServeApi.Refusal(Http, new { mode = "img2img", prompt = "x", image = ServeApi.DataUrl(Input), strength = 0.5 }));
    }
}

/// <summary>SD 1.x InstructPix2Pix: the output keeps the image's size.</summary>
public sealed class InstructPix2PixServeTests : InstructPix2PixServeTestsBase
{
    private protected override string Input => Fixtures.Path("local-diffusers/instruct-pix2pix/input.png");
    private protected override (object? Width, object? Height) Size => (null, null);
    private protected override void WriteModel(string folder) => TinyInstructPix2PixFolder.Write(folder);
}

/// <summary>SDXL InstructPix2Pix: a size, as diffusers' SDXL pipeline takes one.</summary>
public sealed class SdxlInstructPix2PixServeTests : InstructPix2PixServeTestsBase
{
    private protected override string Input => Fixtures.Path("local-diffusers/sdxl-instruct-pix2pix/input.png");
    private protected override (object? Width, object? Height) Size => (56, 48);
    private protected override void WriteModel(string folder) => TinyInstructPix2PixFolder.WriteXL(folder);
}

/// <summary>
/// <c>serve --ip-adapter</c> on tiny-sd3 with the SD3 fixture's adapter and SigLIP encoder: a request's
/// ip_adapter_image equals generate's --ip-adapter-image; a request without one runs without the image prompt.
/// </summary>
public sealed class IpAdapterServeTests : ServeWithAddOn
{
    private static readonly string Adapter = Fixtures.Path("local-diffusers/sd3-ip-adapter/ip-adapter.safetensors");
    private static readonly string Encoder = Fixtures.Path("local-diffusers/siglip-vision/image_encoder");
    private static readonly string Image = Fixtures.Path("tiny-sd3/init_image.png");

    private protected override ServeCommand.Settings Settings => new()
    {
        Model = Fixtures.TinySd3Model, IpAdapter = Adapter, IpAdapterImageEncoder = Encoder,
    };

    [Fact]
    public async Task AnImagePromptEqualsTheCommandLines()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal("ip-adapter.safetensors", info.GetProperty("ip_adapter").GetString());
        var result = await ServeApi.Result(Http, new
        {
            prompt = "a cat", steps = 2, width = 64, height = 64, seed = 3, ip_adapter_image = ServeApi.DataUrl(Image), ip_adapter_scale = 0.8,
        });
        AssertSameAsCommandLine(result, "generate", "--model", Fixtures.TinySd3Model, "--prompt", "a cat", "--steps", "2", "--width", "64",
            "--height", "64", "--seed", "3", "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--ip-adapter-image-encoder", Encoder,
            "--ip-adapter-scale", "0.8");
        var plain = await ServeApi.Result(Http, new { prompt = "a cat", steps = 2, width = 64, height = 64, seed = 3 });
        Assert.NotEqual(ServeApi.Image(result).Pixels, ServeApi.Image(plain).Pixels);
        Assert.Contains("ip_adapter_scale needs ip_adapter_image",
            await ServeApi.Refusal(Http, new { prompt = "x", ip_adapter_scale = 0.5 }));
    }

    [Fact]
    public void ServeRefusesAnIpAdapterForModelsWithoutOneBeforeLoading()
    {
        string model = Out("pix2pix");
        TinyInstructPix2PixFolder.Write(model);
        var (code, _, stderr) = CliRunner.Run("serve", "--model", model, "--ip-adapter", Adapter, "--ip-adapter-image-encoder", Encoder, "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter does not apply to InstructPix2Pix", stderr);
    }
}

/// <summary><c>serve</c> with a latent consistency folder: text-to-image and image-to-image as the command line runs
/// them; inpainting and a negative prompt (which LCM has no guidance for) are refused before anything runs.</summary>
public sealed class LatentConsistencyServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("lcm");
            TinyLcmFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task TextToImageEqualsTheCommandLinesAndWhatLcmLacksIsRefused()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(["txt2img", "img2img"], info.GetProperty("modes").EnumerateArray().Select(s => s.GetString()));
        Assert.False(info.GetProperty("negative_prompt").GetBoolean()); // the page hides the field
        var result = await ServeApi.Result(Http, new { prompt = "a red square", seed = 7, guidance = 6.0, width = 64, height = 64 });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a red square", "--seed", "7", "--guidance", "6",
            "--width", "64", "--height", "64");
        Assert.Contains("negative_prompt", await ServeApi.Refusal(Http, new { prompt = "x", negative_prompt = "blurry" }));
        Assert.Contains("mode inpaint does not apply", await ServeApi.Refusal(Http, new
        {
            mode = "inpaint", prompt = "x", image = ServeApi.DataUrl(Fixtures.Path("tiny-sd15/init_image.png")),
            mask = ServeApi.DataUrl(Fixtures.Path("tiny-sd15/mask.png")),
        }));
    }
}

/// <summary>
/// <c>serve --redux</c> with the fixture's tiny FLUX.1-Redux prior beside the tiny Flux folder (T5 96 wide, as the prior's
/// tokens; CLIP's pooled output 32): the prior loads once at start; a request's Redux images (and its prompt, encoded
/// inside the prior) equal generate --redux's; a request without them runs the plain pipeline; bad fields are refused
/// before anything runs.
/// </summary>
public sealed class FluxReduxServeTests : ServeWithAddOn
{
    private static readonly string Redux = Fixtures.Path(Pipelines.FluxPriorReduxParityTests.Folder);
    private static readonly string Image1 = Fixtures.Path("local-diffusers/flux-redux/image1.png");
    private static readonly string Image2 = Fixtures.Path("local-diffusers/flux-redux/image2.png");
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("flux");
            TinyFluxPipelineFolder.Write(_model);
            return new() { Model = _model, Redux = Redux };
        }
    }

    /// <summary>The fixture image under the name the server gives an upload (which the parameters text names).</summary>
    private string Named(string image, string name)
    {
        string path = Out(name);
        File.Copy(image, path, overwrite: true);
        return path;
    }

    [Fact]
    public async Task ReduxImagesEqualTheCommandLinesAndWithoutThemThePlainPipelineRuns()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.True(info.GetProperty("redux").GetBoolean());
        var result = await ServeApi.Result(Http, new
        {
            prompt = "a cat", steps = 2, width = 32, height = 32, seed = 5,
            redux_images = new[] { ServeApi.DataUrl(Image1), ServeApi.DataUrl(Image2) }, redux_scale = new[] { 0.7, 1.3 }, redux_pooled_scale = 0.4,
        });
        Assert.Contains($"Redux 2: {Redux}, redux-image-2:1.3/0.4", result.GetProperty("parameters").GetString());
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a cat", "--steps", "2", "--width", "32", "--height", "32",
            "--seed", "5", "--redux", Redux, "--redux-image", Named(Image1, "redux-image-1"), "--redux-image", Named(Image2, "redux-image-2"),
            "--redux-scale", "0.7", "--redux-scale", "1.3", "--redux-pooled-scale", "0.4");

        // One image, image to image: as img2img --redux.
        string init = Fixtures.Path("tiny-sd3/init_image.png");
        var edit = await ServeApi.Result(Http, new
        {
            mode = "img2img", prompt = "a cat", steps = 2, width = 32, height = 32, seed = 6, strength = 0.6, image = ServeApi.DataUrl(init),
            redux_image = ServeApi.DataUrl(Image2),
        });
        AssertSameAsCommandLine(edit, "img2img", "--model", _model!, "--image", init, "--prompt", "a cat", "--steps", "2", "--width", "32",
            "--height", "32", "--seed", "6", "--strength", "0.6", "--redux", Redux, "--redux-image", Named(Image2, "redux-image"));

        // Without Redux images: the plain pipeline, as generate without --redux (the prior stays loaded for later requests).
        var plain = await ServeApi.Result(Http, new { prompt = "a cat", steps = 2, width = 32, height = 32, seed = 5 });
        Assert.DoesNotContain("Redux", plain.GetProperty("parameters").GetString());
        AssertSameAsCommandLine(plain, "generate", "--model", _model!, "--prompt", "a cat", "--steps", "2", "--width", "32", "--height", "32", "--seed", "5");
        Assert.NotEqual(ServeApi.Image(plain).Pixels, ServeApi.Image(result).Pixels);
        var again = await ServeApi.Result(Http, new
        {
            prompt = "a cat", steps = 2, width = 32, height = 32, seed = 5,
            redux_images = new[] { ServeApi.DataUrl(Image1), ServeApi.DataUrl(Image2) }, redux_scale = new[] { 0.7, 1.3 }, redux_pooled_scale = 0.4,
        });
        Assert.Equal(ServeApi.Image(result).Pixels, ServeApi.Image(again).Pixels);
    }

    [Theory]
    [InlineData("no-prompt", "redux_image without prompt gives a zero pooled embedding of width 768")]
    [InlineData("both", "give redux_image (one image) or redux_images (a list), not both")]
    [InlineData("empty", "redux_images is empty")]
    [InlineData("scale-alone", "redux_scale needs redux_image")]
    [InlineData("scale-count", "redux_pooled_scale is given once for all images or once per redux_image (2), got 3")]
    [InlineData("not-base64", "redux_images[1] must be a data URL or base64")]
    [InlineData("scale-kind", "redux_scale must be a number or a list of numbers")]
    public async Task ReduxFieldsAreCheckedBeforeAnythingRuns(string kind, string reason)
    {
        string image = ServeApi.DataUrl(Image1);
        object body = kind switch
        {
            "no-prompt" => new { redux_image = image },
            "both" => new { prompt = "x", redux_image = image, redux_images = new[] { image } },
            "empty" => new { prompt = "x", redux_images = Array.Empty<string>() },
            "scale-alone" => new { prompt = "x", redux_scale = 0.5 },
            "scale-count" => new { prompt = "x", redux_images = new[] { image, image }, redux_pooled_scale = new[] { 1.0, 2.0, 3.0 } },
            "not-base64" => new { prompt = "x", redux_images = new[] { image, "not an image!" } },
            _ => new { prompt = "x", redux_image = image, redux_scale = "high" } as object,
        };
        Assert.Contains(reason, await ServeApi.Refusal(Http, body));
    }

    [Fact]
    public void ServeRefusesReduxForOtherFamiliesAndOtherFoldersBeforeLoading()
    {
        var (code, _, stderr) = CliRunner.Run("serve", "--model", Fixtures.TinySd3Model, "--redux", Redux, "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("--redux applies to FLUX.1 models", stderr);
        Assert.DoesNotContain("loading", stderr);
        (code, _, stderr) = CliRunner.Run("serve", "--model", _model!, "--redux", _model!, "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("not a FLUX.1-Redux prior", stderr);
        (code, _, stderr) = CliRunner.Run("serve", "--model", _model!, "--redux", Out("missing"), "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("--redux folder not found", stderr);
    }
}
