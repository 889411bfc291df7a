using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Cli.Web;
using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>The web UI of <c>diffusers serve</c> on the tiny SD 1.5 model, over real HTTP on a free local port.</summary>
public sealed class ServeTests : IAsyncLifetime
{
    private static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private LoadedModel? _model;
    private WebServer? _server;
    private HttpClient? _http;

    private HttpClient Http => _http!;

    public async Task InitializeAsync()
    {
        _model = LoadedModel.Load(Quiet, new ServeCommand.Settings { Model = Fixtures.Path("tiny-sd15/model") }, default);
        _server = await WebServer.StartAsync(_model, Quiet, "127.0.0.1", 0, default);
        _http = new HttpClient { BaseAddress = _server.Address };
    }

    public async Task DisposeAsync()
    {
        _http?.Dispose();
        if (_server is not null) await _server.DisposeAsync();
        _model?.Dispose();
    }

    private static Dictionary<string, object?> TeddyBears() => new()
    {
        ["prompt"] = "A photo of a group of teddy bears eating pizza on the surface of mars", ["negative_prompt"] = "pepperoni",
        ["steps"] = 5, ["width"] = 64, ["height"] = 64, ["seed"] = 123456, ["preview_every"] = 2,
    };

    /// <summary>Posts a generation and reads the whole event stream: (event name, JSON data) in order.</summary>
    private async Task<List<(string Name, JsonElement Data)>> Generate(object body)
    {
        using var response = await Http.PostAsJsonAsync("api/generate", body);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        string text = await response.Content.ReadAsStringAsync();
        return text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(block =>
        {
            var lines = block.Split('\n');
            return (lines[0]["event: ".Length..], JsonDocument.Parse(lines[1]["data: ".Length..]).RootElement.Clone());
        }).ToList();
    }

    private static ImageBuffer Decode(JsonElement dataUrl) =>
        ImageFile.Decode(Convert.FromBase64String(dataUrl.GetString()!["data:image/png;base64,".Length..]));

    [Fact]
    public async Task ThePageAndTheModelInfoAreServed()
    {
        Assert.Contains("<form id=\"form\">", await Http.GetStringAsync("/"));
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal("StableDiffusionPipeline", info.GetProperty("pipeline").GetString());
        Assert.Equal("sd", info.GetProperty("family").GetString());
        Assert.Equal("PNDMScheduler", info.GetProperty("scheduler").GetString());
        Assert.Contains("euler_a", info.GetProperty("schedulers").EnumerateArray().Select(s => s.GetString()));
        Assert.Equal(["txt2img", "img2img", "inpaint"], info.GetProperty("modes").EnumerateArray().Select(s => s.GetString()));
        Assert.True(info.GetProperty("strength").GetBoolean());
        Assert.True(info.GetProperty("padding_mask_crop").GetBoolean());
        Assert.Empty(info.GetProperty("controlnets").EnumerateArray());
        Assert.True(info.GetProperty("negative_prompt").GetBoolean());
        Assert.False(info.GetProperty("guess_mode").GetBoolean());
    }

    [Fact]
    public async Task AGenerationStreamsProgressAndPreviewsThenDiffusersImage()
    {
        var events = await Generate(TeddyBears());
        Assert.Equal("result", events[^1].Name);
        Assert.Contains(events, e => e.Name == "progress" && e.Data.GetProperty("stage").GetString() == "denoise");
        // PNDM runs 5 steps as 6 timestep entries: previews after 2 and 4, none after the last (the result follows).
        Assert.Equal([2, 4], events.Where(e => e.Name == "preview").Select(e => e.Data.GetProperty("step").GetInt32()));
        var result = events[^1].Data;
        Assert.Equal(123456, result.GetProperty("seed").GetInt64());
        Assert.Contains("Sampler: PNDM", result.GetProperty("parameters").GetString());
        var image = Decode(Assert.Single(result.GetProperty("images").EnumerateArray()));
        // The same image as diffusers' t2i_pndm case (and as `generate` writes).
        ImageAssert.RoundedFrom(Fixtures.Expected("tiny-sd15/expected.safetensors")["t2i_pndm.image"], image);
    }

    [Fact]
    public async Task UploadsDriveImageToImageAndInpainting()
    {
        string Url(string file) => "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(Fixtures.Path($"tiny-sd15/{file}")));
        var i2i = await Generate(new { mode = "img2img", prompt = "a dragon", steps = 4, seed = 1, image = Url("init_image.png"), scheduler = "euler_a" });
        var image = Decode(Assert.Single(i2i[^1].Data.GetProperty("images").EnumerateArray()));
        Assert.Equal((64, 64), (image.Width, image.Height));
        Assert.Contains("Sampler: EulerAncestralDiscrete", i2i[^1].Data.GetProperty("parameters").GetString());
        var inpaint = await Generate(new { mode = "inpaint", prompt = "the moon", steps = 3, seed = 2, image = Url("init_image.png"), mask = Url("mask.png") });
        Assert.Equal("result", inpaint[^1].Name);
        // The scheduler of one request does not stay for the next: the model's own is back.
        Assert.Contains("Sampler: PNDM", inpaint[^1].Data.GetProperty("parameters").GetString());
    }

    [Fact]
    public async Task EtaAndGuidanceRescaleReachTheUNetPipeline()
    {
        async Task<ImageBuffer> Image(double eta, double rescale) => Decode(Assert.Single((await Generate(new
        {
            prompt = "a dragon", negative_prompt = "blur", steps = 3, seed = 7, scheduler = "ddim", eta, guidance_rescale = rescale,
        }))[^1].Data.GetProperty("images").EnumerateArray()));
        var plain = await Image(0, 0);
        Assert.NotEqual(plain.Pixels, (await Image(1, 0)).Pixels);   // DDIM's step noise
        Assert.NotEqual(plain.Pixels, (await Image(0, 0.7)).Pixels); // the rescaled CFG
        Assert.Equal(plain.Pixels, (await Image(0, 0)).Pixels);
        using var refused = await Http.PostAsJsonAsync("api/generate", new { prompt = "x", true_cfg = 2.0 });
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Contains("true_cfg applies to Flux models", (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task AnUploadOverKestrelsDefaultBodyLimitIsRead()
    {
        // A photo's PNG in base64 is over Kestrel's default body limit (30 MB), which answered an empty 413: the request
        // must reach the option checks (here the image is not base64, so a 400 with the reason).
        string image = "data:image/png;base64," + new string('A', 40_000_000) + "!";
        using var response = await Http.PostAsJsonAsync("api/generate", new { prompt = "x", mode = "img2img", image });
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("image must be a data URL or base64", (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetString());
    }

    [Fact]
    public void ServeRefusesBadOptionsBeforeLoading()
    {
        var (code, _, stderr) = CliRunner.Run("serve", "--model", Fixtures.Path("tiny-sd15/model"), "--port", "70000");
        Assert.Equal(2, code);
        Assert.Contains("--port must be in [0, 65535]", stderr);
        Assert.Equal(2, CliRunner.Run("serve", "--model", Fixtures.Path("tiny-sd15/model"), "--dtype", "int8").Code);
    }

    [Theory]
    [InlineData("""{"prompt": "x", "steps": 0}""", "steps must be at least 1")]
    [InlineData("""{"prompt": "x", "stepz": 3}""", "stepz")]
    [InlineData("""{"prompt": "x", "mode": "outpaint"}""", "mode must be txt2img, img2img or inpaint")]
    [InlineData("""{"prompt": "x", "scheduler": "no_such_sampler"}""", "Unknown scheduler 'no_such_sampler'")]
    [InlineData("""{"prompt": "x", "mode": "img2img"}""", "image is required")]
    [InlineData("""{"prompt": "x", "mode": "img2img", "image": "not base64!"}""", "image must be a data URL or base64")]
    [InlineData("""{"prompt": "x", "no_t5": true}""", "no_t5")]
    [InlineData("""[1, 2]""", "JSON")]
    [InlineData("""{"prompt": "x", "seed": 1e20}""", "seed must be a whole number from -2^63 to 2^63 - 1")]
    [InlineData("""{"prompt": "x", "steps": "four"}""", "steps must be a whole number")]
    [InlineData("""{"prompt": "x", "control_image": "AAAA"}""", "control_image needs a ControlNet, and this server has none")]
    [InlineData("""{"prompt": "x", "guess_mode": true}""", "guess_mode needs a ControlNet")]
    [InlineData("""{"prompt": "x", "controlnet_scale": "high"}""", "controlnet_scale must be a number or a list of numbers")]
    [InlineData("""{"prompt": "x", "padding_mask_crop": 8}""", "padding_mask_crop applies to inpaint only")]
    [InlineData("""{"prompt": "x", "lora_scale": 0.5}""", "lora_scale needs a LoRA")]
    public async Task InvalidRequestsAreAnsweredWith400AndTheReason(string body, string reason)
    {
        using var response = await Http.PostAsync("api/generate", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetString();
        Assert.Contains(reason, error);
    }
}

/// <summary>The web UI serving a Flux folder (the tiny random one): the family, and a generation through the API.</summary>
public sealed class FluxServeTests : IAsyncLifetime
{
    private static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private readonly string _dir = Directory.CreateTempSubdirectory("flux-serve").FullName;
    private LoadedModel? _model;
    private WebServer? _server;
    private HttpClient? _http;

    public async Task InitializeAsync()
    {
        string folder = Path.Combine(_dir, "model");
        TinyFluxPipelineFolder.Write(folder);
        _model = LoadedModel.Load(Quiet, new ServeCommand.Settings { Model = folder }, default);
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

    [Fact]
    public async Task AFluxModelIsServedAndGenerates()
    {
        var http = _http!;
        var info = await http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal("flux", info.GetProperty("family").GetString());
        Assert.Empty(info.GetProperty("schedulers").EnumerateArray());
        Assert.False(info.GetProperty("redux").GetBoolean());
        Assert.Contains("redux_image needs a FLUX.1-Redux prior, and this server has none",
            await ServeApi.Refusal(http, new { prompt = "x", redux_image = ServeApi.DataUrl(Fixtures.Path("local-diffusers/flux-redux/image1.png")) }));
        using var response = await http.PostAsJsonAsync("api/generate", new { prompt = "a teddy bear", steps = 2, width = 48, height = 32, seed = 3 });
        string text = await response.Content.ReadAsStringAsync();
        var last = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[^1].Split('\n');
        Assert.Equal("event: result", last[0]);
        var result = JsonDocument.Parse(last[1]["data: ".Length..]).RootElement;
        var png = Convert.FromBase64String(result.GetProperty("images")[0].GetString()!["data:image/png;base64,".Length..]);
        var image = ImageFile.Decode(png);
        Assert.Equal((48, 32), (image.Width, image.Height));
        // True CFG with a negative prompt runs a second pass per step: another image than without it.
        async Task<byte[]> Png(object body)
        {
            using var r = await http.PostAsJsonAsync("api/generate", body);
            var end = (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[^1].Split('\n');
            Assert.Equal("event: result", end[0]);
            return Convert.FromBase64String(JsonDocument.Parse(end[1]["data: ".Length..]).RootElement.GetProperty("images")[0].GetString()!["data:image/png;base64,".Length..]);
        }
        var single = await Png(new { prompt = "a teddy bear", negative_prompt = "blur", steps = 2, width = 48, height = 32, seed = 3 });
        var trueCfg = await Png(new { prompt = "a teddy bear", negative_prompt = "blur", steps = 2, width = 48, height = 32, seed = 3, true_cfg = 3.0 });
        Assert.NotEqual(single, trueCfg);
        // Options Flux lacks are refused with a 400 before anything runs.
        using var refused = await http.PostAsJsonAsync("api/generate", new { prompt = "x", scheduler = "euler" });
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Contains("scheduler", (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetString());
    }
}

/// <summary>The web UI with a server-side --lora: its scale per request (the LoRA re-fused between generations).</summary>
public sealed class LoraServeTests : IAsyncLifetime
{
    private static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private LoadedModel? _model;
    private WebServer? _server;
    private HttpClient? _http;

    public async Task InitializeAsync()
    {
        _model = LoadedModel.Load(Quiet, new ServeCommand.Settings
        {
            Model = Fixtures.TinySd3Model, Lora = [Loaders.LoraWeightsTests.LoraFile], LoraScale = ["0.5"],
        }, default);
        _server = await WebServer.StartAsync(_model, Quiet, "127.0.0.1", 0, default);
        _http = new HttpClient { BaseAddress = _server.Address };
    }

    public async Task DisposeAsync()
    {
        _http?.Dispose();
        if (_server is not null) await _server.DisposeAsync();
        _model?.Dispose();
    }

    [Fact]
    public async Task TheLoraScaleCanChangeBetweenRequests()
    {
        var http = _http!;
        async Task<double> Scale() => (await http.GetFromJsonAsync<JsonElement>("api/info")).GetProperty("lora_scale").GetDouble();
        var info = await http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal("pytorch_lora_weights.safetensors", info.GetProperty("lora").GetString());
        Assert.Equal(0.5, await Scale());
        object Body(double? scale) => new { prompt = "a teddy bear", steps = 2, width = 32, height = 32, seed = 3, lora_scale = scale };

        var half = await ServeApi.Result(http, Body(null));
        Assert.Contains("Lora: pytorch_lora_weights.safetensors:0.5", half.GetProperty("parameters").GetString());
        var full = await ServeApi.Result(http, Body(1.0));
        Assert.Equal(1.0, await Scale());
        Assert.Contains("Lora: pytorch_lora_weights.safetensors:1,", full.GetProperty("parameters").GetString());
        Assert.NotEqual(ServeApi.Image(half).Pixels, ServeApi.Image(full).Pixels);
        // Back at 0.5: the weights are those of the first run up to float rounding of the unfuse, so the image is too.
        var again = await ServeApi.Result(http, Body(0.5));
        Assert.Equal(0.5, await Scale());
        var (_, max) = Images.ImageFixtures.Diff(ServeApi.Image(half), ServeApi.Image(again));
        Assert.True(max <= 1, $"the image at scale 0.5 again differs by up to {max}");
    }
}

/// <summary>Reading the API's answers: the event stream of a generation, a refusal's reason.</summary>
internal static class ServeApi
{
    /// <summary>Posts a generation and reads the whole event stream: (event name, JSON data) in order.</summary>
    public static async Task<List<(string Name, JsonElement Data)>> Generate(HttpClient http, object body)
    {
        using var response = await http.PostAsJsonAsync("api/generate", body);
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(block =>
        {
            var lines = block.Split('\n');
            return (lines[0]["event: ".Length..], JsonDocument.Parse(lines[1]["data: ".Length..]).RootElement.Clone());
        }).ToList();
    }

    /// <summary>The result event's data (the stream must end with it).</summary>
    public static async Task<JsonElement> Result(HttpClient http, object body)
    {
        var events = await Generate(http, body);
        Assert.True(events[^1].Name == "result", events[^1].Data.ToString());
        return events[^1].Data;
    }

    /// <summary>The single image of a result.</summary>
    public static ImageBuffer Image(JsonElement result) =>
        ImageFile.Decode(Convert.FromBase64String(Assert.Single(result.GetProperty("images").EnumerateArray()).GetString()!["data:image/png;base64,".Length..]));

    /// <summary>Posts a request that must be refused: the 400's reason.</summary>
    public static async Task<string> Refusal(HttpClient http, object body)
    {
        using var response = await http.PostAsJsonAsync("api/generate", body);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetString()!;
    }

    /// <summary>A file as a PNG data URL, as the page sends it.</summary>
    public static string DataUrl(string file) => "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(file));
}

/// <summary>
/// <c>serve --controlnet</c> on the tiny SD 1.5 model with the fixture's tiny ControlNet: the control fields of the API
/// reach the ControlNet pipelines as the CLI's options do.
/// </summary>
public sealed class ControlNetServeTests : IAsyncLifetime
{
    private static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private readonly string _dir = Directory.CreateTempSubdirectory("controlnet-serve").FullName;
    private LoadedModel? _model;
    private WebServer? _server;
    private HttpClient? _http;

    private HttpClient Http => _http!;

    private static string Fixture(string name) => Fixtures.Path($"local-diffusers/controlnet/{name}");

    private static string Model => Fixtures.Path("tiny-sd15/model");

    public async Task InitializeAsync()
    {
        _model = LoadedModel.Load(Quiet, new ServeCommand.Settings { Model = Model, ControlNet = [Fixture("sd15")] }, default);
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

    [Fact]
    public async Task InfoNamesTheControlNetsAndWhereTheyApply()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal([Fixture("sd15")], info.GetProperty("controlnets").EnumerateArray().Select(s => s.GetString()));
        Assert.Equal(["txt2img", "img2img", "inpaint"], info.GetProperty("controlnet_modes").EnumerateArray().Select(s => s.GetString()));
        Assert.True(info.GetProperty("guess_mode").GetBoolean());
    }

    [Fact]
    public async Task AControlNetGenerationEqualsTheCommandLines()
    {
        var result = await ServeApi.Result(Http, new
        {
            prompt = "edges", steps = 4, width = 64, height = 64, seed = 12, control_image = ServeApi.DataUrl(Fixture("control.png")),
            controlnet_scale = 1.3, control_start = 0.1, control_end = 0.6,
        });
        string output = Path.Combine(_dir, "cli.png");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt", "edges", "--controlnet", Fixture("sd15"),
            "--control-image", Fixture("control.png"), "--controlnet-scale", "1.3", "--control-start", "0.1", "--control-end", "0.6",
            "--steps", "4", "--width", "64", "--height", "64", "--seed", "12", "--output", output);
        Assert.True(code == 0, stderr);
        Assert.Equal(ImageFile.Load(output).Pixels, ServeApi.Image(result).Pixels);
        Assert.Equal(ImageFile.ReadPngText(output)["parameters"], result.GetProperty("parameters").GetString());
        Assert.Contains($"ControlNet: {Fixture("sd15")}:1.3 [0.1, 0.6]", result.GetProperty("parameters").GetString());

        // The same request without the control image runs the plain pipeline: another image, no ControlNet in the parameters.
        var plain = await ServeApi.Result(Http, new { prompt = "edges", steps = 4, width = 64, height = 64, seed = 12 });
        Assert.DoesNotContain("ControlNet", plain.GetProperty("parameters").GetString());
        Assert.NotEqual(ServeApi.Image(result).Pixels, ServeApi.Image(plain).Pixels);
    }

    [Fact]
    public async Task AControlImageSteersInpaintingWithGuessMode()
    {
        var result = await ServeApi.Result(Http, new
        {
            mode = "inpaint", prompt = "the moon", steps = 3, seed = 2, image = ServeApi.DataUrl(Fixtures.Path("tiny-sd15/init_image.png")),
            mask = ServeApi.DataUrl(Fixtures.Path("tiny-sd15/mask.png")), control_images = new[] { ServeApi.DataUrl(Fixture("control.png")) },
            controlnet_scale = new[] { 0.5 }, guess_mode = true,
        });
        Assert.Contains("Mode: inpaint", result.GetProperty("parameters").GetString());
        Assert.Contains("ControlNet:", result.GetProperty("parameters").GetString());
    }

    [Theory]
    [InlineData("two", "this server has 1 ControlNet")]
    [InlineData("both", "give control_image (one ControlNet) or control_images")]
    [InlineData("no-image", "controlnet_scale needs control_image")]
    [InlineData("three-scales", "controlnet_scale is given once for all ControlNets or once per controlnet (1), got 3")]
    [InlineData("window", "control_start and control_end must satisfy 0 <= start < end <= 1")]
    [InlineData("not-base64", "control_image must be a data URL or base64")]
    public async Task ControlFieldsAreCheckedBeforeAnythingRuns(string kind, string reason)
    {
        string control = ServeApi.DataUrl(Fixture("control.png"));
        object body = kind switch
        {
            "two" => new { prompt = "x", control_images = new[] { control, control } },
            "both" => new { prompt = "x", control_image = control, control_images = new[] { control } },
            "no-image" => new { prompt = "x", controlnet_scale = 0.5 },
            "three-scales" => new { prompt = "x", control_image = control, controlnet_scale = new[] { 1.0, 0.5, 0.2 } },
            "window" => new { prompt = "x", control_image = control, control_start = 0.7, control_end = 0.6 },
            _ => new { prompt = "x", control_image = "not base64!" },
        };
        Assert.Contains(reason, await ServeApi.Refusal(Http, body));
    }

    [Fact]
    public void ServeRefusesAControlNetForFluxFillBeforeLoading()
    {
        string folder = Path.Combine(_dir, "fill");
        TinyFluxPipelineFolder.Write(folder, pipelineClass: "FluxFillPipeline", inChannels: 384);
        var (code, _, stderr) = CliRunner.Run("serve", "--model", folder, "--controlnet", Fixtures.Path("local-diffusers/flux-controlnet/controlnet"), "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("--controlnet applies to FLUX.1 text-to-image models", stderr);
        Assert.DoesNotContain("loading", stderr);
    }
}

/// <summary>
/// <c>serve --controlnet</c> on the tiny Flux folder with the Flux ControlNet of local-diffusers/flux-controlnet: the
/// control fields reach the Flux ControlNet pipelines as the CLI's options do, in the three modes; no guess mode.
/// </summary>
public sealed class FluxControlNetServeTests : IAsyncLifetime
{
    private static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private static readonly string Net = Fixtures.Path("local-diffusers/flux-controlnet/controlnet");
    private static readonly string Image = Fixtures.Path("tiny-sd3/init_image.png"), Mask = Fixtures.Path("tiny-sd3/mask.png");
    private readonly string _dir = Directory.CreateTempSubdirectory("flux-controlnet-serve").FullName;
    private LoadedModel? _model;
    private WebServer? _server;
    private HttpClient? _http;

    private HttpClient Http => _http!;

    private string Model => Path.Combine(_dir, "model");

    public async Task InitializeAsync()
    {
        TinyFluxPipelineFolder.Write(Model);
        _model = LoadedModel.Load(Quiet, new ServeCommand.Settings { Model = Model, ControlNet = [Net] }, default);
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

    [Fact]
    public async Task InfoNamesTheControlNetInEveryModeWithoutGuessMode()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal([Net], info.GetProperty("controlnets").EnumerateArray().Select(s => s.GetString()));
        Assert.Equal(["txt2img", "img2img", "inpaint"], info.GetProperty("controlnet_modes").EnumerateArray().Select(s => s.GetString()));
        Assert.False(info.GetProperty("guess_mode").GetBoolean());
    }

    [Fact]
    public async Task AnInpaintingWithTheControlNetEqualsTheCommandLines()
    {
        var result = await ServeApi.Result(Http, new
        {
            mode = "inpaint", prompt = "a teddy bear", steps = 2, width = 48, height = 32, seed = 4, image = ServeApi.DataUrl(Image),
            mask = ServeApi.DataUrl(Mask), control_image = ServeApi.DataUrl(Image), controlnet_scale = 0.7, control_end = 0.5,
        });
        string output = Path.Combine(_dir, "cli.png");
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", Model, "--prompt", "a teddy bear", "--image", Image, "--mask", Mask,
            "--controlnet", Net, "--control-image", Image, "--controlnet-scale", "0.7", "--control-end", "0.5", "--steps", "2",
            "--width", "48", "--height", "32", "--seed", "4", "--output", output);
        Assert.True(code == 0, stderr);
        Assert.Equal(ImageFile.Load(output).Pixels, ServeApi.Image(result).Pixels);
        Assert.Contains($"ControlNet: {Net}:0.7 [0, 0.5]", result.GetProperty("parameters").GetString());
        Assert.Contains("guess_mode does not apply to Flux ControlNets",
            await ServeApi.Refusal(Http, new { prompt = "x", control_image = ServeApi.DataUrl(Image), guess_mode = true }));
        Assert.Contains("FluxControlNetImg2ImgPipeline has no true CFG", await ServeApi.Refusal(Http, new
        {
            mode = "img2img", prompt = "x", negative_prompt = "blurry", image = ServeApi.DataUrl(Image), control_image = ServeApi.DataUrl(Image),
        }));
    }
}

/// <summary>FLUX.1-Fill and FLUX.1-Kontext folders served: the modes each runs, and the others refused with the reason.</summary>
public sealed class FluxFillKontextServeTests : IAsyncLifetime
{
    private static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private readonly string _dir = Directory.CreateTempSubdirectory("flux-fk-serve").FullName;
    private readonly List<IAsyncDisposable> _servers = [];
    private readonly List<LoadedModel> _models = [];
    private HttpClient? _fill, _kontext;
    private static readonly string Image = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/init_image.png"));
    private static readonly string Mask = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/mask.png"));

    private async Task<HttpClient> Serve(string name, string pipelineClass, int inChannels)
    {
        string folder = Path.Combine(_dir, name);
        TinyFluxPipelineFolder.Write(folder, pipelineClass: pipelineClass, inChannels: inChannels);
        var model = LoadedModel.Load(Quiet, new ServeCommand.Settings { Model = folder }, default);
        _models.Add(model);
        var server = await WebServer.StartAsync(model, Quiet, "127.0.0.1", 0, default);
        _servers.Add(server);
        return new HttpClient { BaseAddress = server.Address };
    }

    public async Task InitializeAsync()
    {
        _fill = await Serve("fill", "FluxFillPipeline", 384);
        _kontext = await Serve("kontext", "FluxKontextPipeline", 64);
    }

    public async Task DisposeAsync()
    {
        _fill?.Dispose();
        _kontext?.Dispose();
        foreach (var server in _servers) await server.DisposeAsync();
        foreach (var model in _models) model.Dispose();
        Directory.Delete(_dir, true);
    }

    private static async Task<JsonElement> Info(HttpClient http) => await http.GetFromJsonAsync<JsonElement>("api/info");

    private static IEnumerable<string?> Modes(JsonElement info) => info.GetProperty("modes").EnumerateArray().Select(s => s.GetString());

    [Fact]
    public async Task AFillFolderInpaintsOnly()
    {
        var info = await Info(_fill!);
        Assert.Equal("FluxFillPipeline", info.GetProperty("pipeline").GetString());
        Assert.Equal(["inpaint"], Modes(info));
        Assert.False(info.GetProperty("true_cfg").GetBoolean());
        Assert.True(info.GetProperty("strength").GetBoolean());
        Assert.False(info.GetProperty("padding_mask_crop").GetBoolean());
        var result = await ServeApi.Result(_fill!, new { mode = "inpaint", prompt = "a teddy bear", steps = 2, width = 48, height = 32, seed = 3, image = Image, mask = Mask });
        Assert.Equal((48, 32), (ServeApi.Image(result).Width, ServeApi.Image(result).Height));
        Assert.Contains("CFG scale: 30,", result.GetProperty("parameters").GetString()); // diffusers' Fill default guidance
        Assert.Contains("mode txt2img does not apply to FLUX.1-Fill", await ServeApi.Refusal(_fill!, new { prompt = "x" }));
        Assert.Contains("mode img2img does not apply to FLUX.1-Fill", await ServeApi.Refusal(_fill!, new { prompt = "x", mode = "img2img", image = Image }));
        Assert.Contains("true_cfg does not apply to FLUX.1-Fill",
            await ServeApi.Refusal(_fill!, new { prompt = "x", mode = "inpaint", image = Image, mask = Mask, true_cfg = 2.0 }));
        Assert.Contains("padding_mask_crop does not apply to FLUX.1-Fill",
            await ServeApi.Refusal(_fill!, new { prompt = "x", mode = "inpaint", image = Image, mask = Mask, padding_mask_crop = 8 }));
    }

    [Fact]
    public async Task AKontextFolderGeneratesEditsWithoutStrengthAndInpaints()
    {
        var info = await Info(_kontext!);
        Assert.Equal("FluxKontextPipeline", info.GetProperty("pipeline").GetString());
        Assert.Equal(["txt2img", "img2img", "inpaint"], Modes(info));
        Assert.True(info.GetProperty("true_cfg").GetBoolean());
        Assert.False(info.GetProperty("strength").GetBoolean());
        Assert.Equal(["inpaint"], info.GetProperty("strength_modes").EnumerateArray().Select(s => s.GetString()));
        var edit = await ServeApi.Result(_kontext!, new { mode = "img2img", prompt = "a teddy bear", steps = 2, width = 48, height = 32, seed = 3, image = Image });
        Assert.Equal((48, 32), (ServeApi.Image(edit).Width, ServeApi.Image(edit).Height));
        Assert.DoesNotContain("Denoising strength", edit.GetProperty("parameters").GetString());
        var generated = await ServeApi.Result(_kontext!, new { prompt = "a teddy bear", steps = 2, width = 48, height = 32, seed = 3 });
        Assert.Contains("Mode: txt2img", generated.GetProperty("parameters").GetString());
        Assert.Contains("strength does not apply to FLUX.1-Kontext",
            await ServeApi.Refusal(_kontext!, new { prompt = "x", mode = "img2img", image = Image, strength = 0.5 }));
        // Kontext inpainting (FluxKontextInpaintPipeline) at the image's Kontext size: 64 x 64 auto-resizes to 1024 x 1024.
        var inpainted = await ServeApi.Result(_kontext!, new { mode = "inpaint", prompt = "a teddy bear", steps = 1, seed = 3, image = Image, mask = Mask, strength = 0.9 });
        Assert.Equal((1024, 1024), (ServeApi.Image(inpainted).Width, ServeApi.Image(inpainted).Height));
        Assert.Contains("Denoising strength: 0.9", inpainted.GetProperty("parameters").GetString());
        Assert.Contains("control_image needs a ControlNet", await ServeApi.Refusal(_kontext!, new { prompt = "x", control_image = Image }));
    }
}
