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
    [InlineData("""{"prompt": "x", "scheduler": "ipndm"}""", "Unknown scheduler 'ipndm'")]
    [InlineData("""{"prompt": "x", "mode": "img2img"}""", "image is required")]
    [InlineData("""{"prompt": "x", "mode": "img2img", "image": "not base64!"}""", "image must be a data URL or base64")]
    [InlineData("""{"prompt": "x", "no_t5": true}""", "no_t5")]
    [InlineData("""[1, 2]""", "JSON")]
    [InlineData("""{"prompt": "x", "seed": 1e20}""", "seed must be a whole number from -2^63 to 2^63 - 1")]
    [InlineData("""{"prompt": "x", "steps": "four"}""", "steps must be a whole number")]
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
