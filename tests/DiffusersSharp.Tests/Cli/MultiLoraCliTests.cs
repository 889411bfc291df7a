using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Cli.Web;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// Several <c>--lora</c> files: fused one after another, each at its <c>--lora-scale</c> (diffusers' adapters with
/// set_adapters weights; MultiLoraParityTests checks the fused weights against diffusers), in generate and serve.
/// </summary>
public sealed class MultiLoraCliTests() : CliTempDirectory("multilora")
{
    private static readonly string Model = Fixtures.Path("tiny-sd15/model");
    internal static readonly string Kohya = Fixtures.Path("local-diffusers/kohya-lora/sd15.safetensors");
    internal static readonly string Peft = Fixtures.Path("local-diffusers/multi-lora/peft.safetensors");

    private static string[] Run(string output, params string[] loraArgs) =>
        ["generate", "--model", Model, "--prompt", "a red square", "--steps", "2", "--guidance", "5", "--width", "32", "--height", "32",
         "--seed", "3", .. loraArgs, "--output", output];

    [Fact]
    public void TwoLorasDrawTheLibrarysImageOfBothFused()
    {
        var run = CliRunner.Run(Run(Out(), "--lora", Kohya, "--lora", Peft, "--lora-scale", "0.48", "--lora-scale", "-0.36"));
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("Lora 1: sd15.safetensors:0.48, Lora 2: peft.safetensors:-0.36", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusionComponents.FromPretrained(Model, new PipelineLoadOptions());
        components.FuseLora(Kohya, 0.48);
        components.FuseLora(Peft, -0.36);
        using var pipe = new StableDiffusionPipeline(components);
        using var library = pipe.Generate(new StableDiffusionRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 5, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);

        // One --lora-scale is every LoRA's: the same image as the scale given twice.
        Assert.Equal(0, CliRunner.Run(Run(Out("one.png"), "--lora", Kohya, "--lora", Peft, "--lora-scale", "0.5")).Code);
        Assert.Equal(0, CliRunner.Run(Run(Out("two.png"), "--lora", Kohya, "--lora", Peft, "--lora-scale", "0.5", "--lora-scale", "0.5")).Code);
        Assert.Equal(ImageFile.Load(Out("one.png")).Pixels, ImageFile.Load(Out("two.png")).Pixels);
        Assert.NotEqual(ImageFile.Load(Out()).Pixels, ImageFile.Load(Out("one.png")).Pixels);
    }

    [Fact]
    public void LoraScalesThatFitNoLoraAreRefusedBeforeLoading()
    {
        foreach (var (args, message) in new[]
        {
            (new[] { "--lora", Kohya, "--lora", Peft, "--lora-scale", "1", "--lora-scale", "2", "--lora-scale", "3" }, "--lora-scale is given 3 times for 2 --lora files"),
            (new[] { "--lora-scale", "0.5" }, "--lora-scale needs --lora"),
            (new[] { "--lora", Kohya, "--lora", Out("missing.safetensors") }, "--lora file not found"),
            (new[] { "--lora", Kohya, "--lora", Peft, "--lora-scale", "1", "--lora-scale", "NaN" }, "--lora-scale must be a finite number"),
        })
        {
            var (code, _, stderr) = CliRunner.Run(Run(Out(), args));
            Assert.Equal(2, code);
            Assert.Contains(message, stderr);
            Assert.DoesNotContain("loading", stderr);
            Assert.False(File.Exists(Out()));
        }
    }
}

/// <summary><c>serve --lora A --lora B</c>: both LoRAs named in /api/info; requests set one scale for all or one each.</summary>
public sealed class MultiLoraServeTests : IAsyncLifetime
{
    private static readonly CliOutput Quiet = new(TextWriter.Null, TextWriter.Null);
    private LoadedModel? _model;
    private WebServer? _server;
    private HttpClient? _http;

    public async Task InitializeAsync()
    {
        _model = LoadedModel.Load(Quiet, new ServeCommand.Settings
        {
            Model = Fixtures.Path("tiny-sd15/model"), Lora = [MultiLoraCliTests.Kohya, MultiLoraCliTests.Peft], LoraScale = ["0.48", "-0.36"],
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
    public async Task EachLoraScaleCanChangeBetweenRequests()
    {
        var http = _http!;
        async Task<double[]> Scales() => (await http.GetFromJsonAsync<JsonElement>("api/info")).GetProperty("lora_scales").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        var info = await http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(["sd15.safetensors", "peft.safetensors"], info.GetProperty("loras").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("sd15.safetensors", info.GetProperty("lora").GetString());
        Assert.Equal(new[] { 0.48, -0.36 }, await Scales());
        object Body(object? scale) => new { prompt = "a red square", steps = 2, width = 32, height = 32, seed = 3, guidance = 5, lora_scale = scale };

        var first = await ServeApi.Result(http, Body(null));
        Assert.Contains("Lora 1: sd15.safetensors:0.48, Lora 2: peft.safetensors:-0.36", first.GetProperty("parameters").GetString());
        Assert.Contains("lora_scale has 3 numbers for 2 LoRAs", await ServeApi.Refusal(http, Body(new[] { 1.0, 2.0, 3.0 })));
        Assert.Equal(new[] { 0.48, -0.36 }, await Scales());

        var both = await ServeApi.Result(http, Body(0.5));
        Assert.Equal(new[] { 0.5, 0.5 }, await Scales());
        Assert.Contains("Lora 1: sd15.safetensors:0.5, Lora 2: peft.safetensors:0.5", both.GetProperty("parameters").GetString());
        // Back at the start scales: the weights are the first run's up to float rounding of the unfuse, so the image is too.
        var again = await ServeApi.Result(http, Body(new[] { 0.48, -0.36 }));
        Assert.Equal(new[] { 0.48, -0.36 }, await Scales());
        Assert.NotEqual(ServeApi.Image(first).Pixels, ServeApi.Image(both).Pixels);
        var (_, max) = Images.ImageFixtures.Diff(ServeApi.Image(first), ServeApi.Image(again));
        Assert.True(max <= 1, $"the image at the start scales again differs by up to {max}");
    }
}
