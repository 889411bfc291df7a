using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Cli.Web;
using DiffusersSharp.Images;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>--freeu</c> (FreeUParityTests checks FreeU itself against diffusers): generate and serve.</summary>
public sealed class FreeUCliTests() : CliTempDirectory("freeu")
{
    private static readonly string Model = Fixtures.Path("tiny-sd15/model");

    [Fact]
    public void FreeUDrawsTheLibrarysImage()
    {
        var run = CliRunner.Run("generate", "--model", Model, "--prompt", "a red square", "--steps", "2", "--guidance", "5", "--width", "32",
            "--height", "32", "--seed", "3", "--freeu", "0.9, 0.2,1.2,1.4", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("FreeU: 0.9,0.2,1.2,1.4", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusionComponents.FromPretrained(Model, new PipelineLoadOptions());
        components.Unet.SetFreeU(new FreeU(0.9, 0.2, 1.2, 1.4));
        using var pipe = new StableDiffusionPipeline(components);
        using var library = pipe.Generate(new StableDiffusionRequest
        {
            Prompt = "a red square", NumInferenceSteps = 2, GuidanceScale = 5, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void BadFreeUIsRefusedBeforeLoading()
    {
        foreach (var (model, freeU, message) in new[]
        {
            (Model, "0.9,0.2,1.2", "--freeu takes four numbers s1,s2,b1,b2 (e.g. 0.9,0.2,1.2,1.4), got 3"),
            (Model, "0.9,0.2,1.2,big", "--freeu takes four numbers"),
            (Fixtures.TinySd3Model, "0.9,0.2,1.2,1.4", "--freeu applies to SD 1.x / 2.x and SDXL models"),
        })
        {
            var (code, _, stderr) = CliRunner.Run("generate", "--model", model, "--prompt", "x", "--freeu", freeU, "--output", Out());
            Assert.Equal(2, code);
            Assert.Contains(message, stderr);
            Assert.DoesNotContain("loading", stderr);
            Assert.False(File.Exists(Out()));
        }
    }

    [Fact]
    public async Task ServeAppliesFreeUPerRequest()
    {
        var quiet = new CliOutput(TextWriter.Null, TextWriter.Null);
        using var model = LoadedModel.Load(quiet, new ServeCommand.Settings { Model = Model }, default);
        await using var server = await WebServer.StartAsync(model, quiet, "127.0.0.1", 0, default);
        using var http = new HttpClient { BaseAddress = server.Address };
        object Body(double[]? freeU) => new { prompt = "a red square", steps = 2, width = 32, height = 32, seed = 3, guidance = 5, freeu = freeU };

        var plain = await ServeApi.Result(http, Body(null));
        var freeU = await ServeApi.Result(http, Body([0.9, 0.2, 1.2, 1.4]));
        Assert.Contains("FreeU: 0.9,0.2,1.2,1.4", freeU.GetProperty("parameters").GetString());
        Assert.NotEqual(ServeApi.Image(plain).Pixels, ServeApi.Image(freeU).Pixels);
        // A request without it runs without FreeU again (the server does not keep the last request's).
        Assert.Equal(ServeApi.Image(plain).Pixels, ServeApi.Image(await ServeApi.Result(http, Body(null))).Pixels);
        Assert.Contains("freeu takes four numbers", await ServeApi.Refusal(http, Body([0.9, 0.2])));
    }
}
