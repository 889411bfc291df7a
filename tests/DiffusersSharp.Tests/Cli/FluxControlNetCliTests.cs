using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>generate</c>, <c>img2img</c> and <c>inpaint</c> with <c>--controlnet</c> on a Flux folder (the tiny Flux pipeline
/// folder with the Flux ControlNets of local-diffusers/flux-controlnet and flux-controlnet-modes, which fit its
/// transformer): the CLI's wiring gives the library call's pixels exactly (FluxControlNetModesParityTests checks the
/// library against diffusers), and what diffusers' Flux ControlNet pipelines lack is refused before loading.
/// </summary>
public sealed class FluxControlNetCliTests : CliTempDirectory
{
    private readonly string _model;
    private static readonly string First = Fixtures.Path("local-diffusers/flux-controlnet/controlnet");
    private static readonly string Second = Fixtures.Path("local-diffusers/flux-controlnet-modes/controlnet2");
    private static readonly string Image = Fixtures.Path("tiny-sd3/init_image.png"), Mask = Fixtures.Path("tiny-sd3/mask.png");
    private static readonly string Control2 = Fixtures.Path("local-diffusers/flux-controlnet-modes/control2.png");

    public FluxControlNetCliTests() : base("flux-controlnet-cli")
    {
        _model = Path.Combine(Dir, "model");
        TinyFluxPipelineFolder.Write(_model);
    }

    private string[] Common(string output) => ["--model", _model, "--prompt", "a teddy bear", "--steps", "3", "--width", "48", "--height", "32",
        "--seed", "3", "--max-sequence-length", "16", "--output", output];

    /// <summary>The library's image for the same request as the CLI builds it (prompt, size, steps, seed, defaults).</summary>
    private byte[] Library<TPipe, TRequest>(IReadOnlyList<string> controlnets, Func<FluxComponents, TPipe> create, TRequest request,
        Func<TPipe, TRequest, FluxOutput> generate) where TPipe : FluxPipelineBase where TRequest : FluxRequest
    {
        using var components = FluxComponents.FromPretrained(_model, new PipelineLoadOptions(), controlnets);
        using var pipe = create(components);
        using var generator = new Generator("cpu").ManualSeed(3);
        using var output = generate(pipe, request with
        {
            Prompt = "a teddy bear", NumInferenceSteps = 3, Width = 48, Height = 32, MaxSequenceLength = 16, Generator = generator,
        });
        return output.Images![0].Pixels;
    }

    [Fact]
    public void GenerateWithAFluxControlNetDrawsTheLibrarysImage()
    {
        var (code, _, stderr) = CliRunner.Run(["generate", .. Common(Out()), "--controlnet", First, "--control-image", Image,
            "--controlnet-scale", "0.6", "--control-start", "0.25", "--control-end", "0.75"]);
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"ControlNet: {First}:0.6 [0.25, 0.75]", parameters);
        Assert.Contains("CFG scale: 7,", parameters); // diffusers' FluxControlNetPipeline default guidance
        var expected = Library([First], c => new FluxControlNetPipeline(c), new FluxControlNetRequest
        {
            ControlImage = ImageFile.LoadRgb(Image), ControlNetConditioningScale = 0.6, ControlGuidanceStart = 0.25, ControlGuidanceEnd = 0.75,
        }, (p, r) => p.Generate(r));
        Assert.Equal(expected, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void Img2ImgWithTwoFluxControlNetsPairsTheirOptionsInOrder()
    {
        var (code, _, stderr) = CliRunner.Run(["img2img", .. Common(Out()), "--image", Image, "--strength", "0.7",
            "--controlnet", First, "--control-image", Image, "--controlnet-scale", "0.5", "--control-end", "0.5",
            "--controlnet", Second, "--control-image", Control2, "--controlnet-scale", "1.2", "--control-end", "1"]);
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"ControlNet 1: {First}:0.5 [0, 0.5]", parameters);
        Assert.Contains($"ControlNet 2: {Second}:1.2 [0, 1]", parameters);
        Assert.Contains("Denoising strength: 0.7", parameters);
        var expected = Library([First, Second], c => new FluxControlNetImg2ImgPipeline(c), new FluxControlNetImg2ImgRequest
        {
            Image = ImageFile.LoadRgb(Image), Strength = 0.7, ControlImages = [ImageFile.LoadRgb(Image), ImageFile.LoadRgb(Control2)],
            ControlNetConditioningScales = [0.5, 1.2], ControlGuidanceEnds = [0.5, 1.0],
        }, (p, r) => p.Generate(r));
        Assert.Equal(expected, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void InpaintWithAFluxControlNetTakesDiffusersDefaults()
    {
        var (code, _, stderr) = CliRunner.Run(["inpaint", .. Common(Out()), "--image", Image, "--mask", Mask, "--controlnet", First,
            "--control-image", Control2]);
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"ControlNet: {First}:1 [0, 1]", parameters); // diffusers' FluxControlNetInpaintPipeline default scale
        Assert.Contains("Denoising strength: 0.6", parameters);
        var expected = Library([First], c => new FluxControlNetInpaintPipeline(c), new FluxControlNetInpaintRequest
        {
            Image = ImageFile.LoadRgb(Image), MaskImage = ImageFile.Load(Mask), ControlImage = ImageFile.LoadRgb(Control2),
        }, (p, r) => p.Generate(r));
        Assert.Equal(expected, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void WhatFluxControlNetPipelinesLackIsRefusedBeforeLoading()
    {
        string fill = Path.Combine(Dir, "fill"), kontext = Path.Combine(Dir, "kontext");
        TinyFluxPipelineFolder.Write(fill, pipelineClass: "FluxFillPipeline", inChannels: 384);
        TinyFluxPipelineFolder.Write(kontext, pipelineClass: "FluxKontextPipeline");
        string[] control = ["--controlnet", First, "--control-image", Image];
        foreach (var (args, reason) in new (string[], string)[]
        {
            (["generate", "--model", _model, .. control, "--guess-mode"], "--guess-mode does not apply to Flux ControlNets"),
            (["img2img", "--model", _model, "--image", Image, .. control, "--negative-prompt", "blurry", "--true-cfg", "2"],
                "diffusers' FluxControlNetImg2ImgPipeline has no true CFG"),
            (["inpaint", "--model", _model, "--image", Image, "--mask", Mask, .. control, "--negative-prompt", "blurry"],
                "diffusers' FluxControlNetInpaintPipeline has no true CFG"),
            (["inpaint", "--model", fill, "--image", Image, "--mask", Mask, .. control], "a FluxFillPipeline (diffusers has no Flux ControlNet pipeline for it)"),
            (["generate", "--model", kontext, .. control], "a FluxKontextPipeline (diffusers has no Flux ControlNet pipeline for it)"),
        })
        {
            var (code, _, stderr) = CliRunner.Run([.. args, "--prompt", "x", "--steps", "1", "--output", Out()]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {stderr}");
            Assert.Contains(reason, stderr);
            Assert.DoesNotContain("loading", stderr);
        }
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public void AControlNetOfAnotherFamilyIsRefusedByName()
    {
        var (code, _, stderr) = CliRunner.Run(["generate", .. Common(Out()), "--controlnet", Fixtures.Path("local-diffusers/controlnet/sd15"),
            "--control-image", Image]);
        Assert.Equal(2, code);
        Assert.Contains("is a ControlNetModel, not a Flux ControlNet", stderr);
        Assert.False(File.Exists(Out()));
    }
}
