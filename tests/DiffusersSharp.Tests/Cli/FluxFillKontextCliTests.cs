using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// FLUX.1-Fill and FLUX.1-Kontext folders (model_index.json FluxFillPipeline / FluxKontextPipeline) through the verbs:
/// Fill runs inpaint, Kontext runs img2img (image editing); what they lack is refused before any weights load.
/// </summary>
public sealed class FluxFillKontextCliTests : CliTempDirectory
{
    private readonly string _fill, _kontext;
    private readonly string _image = Fixtures.Path("tiny-sd3/init_image.png"), _mask = Fixtures.Path("tiny-sd3/mask.png");

    public FluxFillKontextCliTests() : base("flux-fk-cli")
    {
        _fill = Path.Combine(Dir, "fill");
        TinyFluxPipelineFolder.Write(_fill, pipelineClass: "FluxFillPipeline", inChannels: 384);
        _kontext = Path.Combine(Dir, "kontext");
        TinyFluxPipelineFolder.Write(_kontext, pipelineClass: "FluxKontextPipeline");
    }

    private string[] Common(string model, string output) => ["--model", model, "--prompt", "a teddy bear", "--steps", "2", "--width", "48",
        "--height", "32", "--seed", "3", "--max-sequence-length", "16", "--output", output];

    [Fact]
    public void InpaintWithAFillFolderRunsFluxFillWithItsDefaults()
    {
        var run = CliRunner.Run(["inpaint", .. Common(_fill, Out()), "--image", _image, "--mask", _mask]);
        Assert.True(run.Code == 0, run.Err);
        var written = ImageFile.Load(Out());
        Assert.Equal((48, 32), (written.Width, written.Height));
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("Mode: inpaint", parameters);
        Assert.Contains("CFG scale: 30,", parameters); // diffusers' Fill default guidance
        Assert.Contains("Denoising strength: 1", parameters);
    }

    [Fact]
    public void Img2ImgWithAKontextFolderEditsAtTheRequestedSize()
    {
        var run = CliRunner.Run(["img2img", .. Common(_kontext, Out()), "--image", _image]);
        Assert.True(run.Code == 0, run.Err);
        var written = ImageFile.Load(Out());
        Assert.Equal((48, 32), (written.Width, written.Height)); // --width x --height is Kontext's max_area at that aspect
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("Mode: img2img", parameters);
        Assert.Contains("CFG scale: 3.5,", parameters); // diffusers' Kontext default guidance
        Assert.DoesNotContain("Denoising strength", parameters);
    }

    [Fact]
    public void InpaintWithAKontextFolderRunsKontextInpaintingAtTheImagesKontextSize()
    {
        // No --width / --height (refused below): the 64 x 64 image auto-resizes to the preferred 1024 x 1024.
        var run = CliRunner.Run(["inpaint", "--model", _kontext, "--prompt", "a teddy bear", "--steps", "2", "--seed", "3",
            "--max-sequence-length", "16", "--output", Out(), "--image", _image, "--mask", _mask, "--strength", "0.5"]);
        Assert.True(run.Code == 0, run.Err);
        var written = ImageFile.Load(Out());
        Assert.Equal((1024, 1024), (written.Width, written.Height));
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("Mode: inpaint", parameters);
        Assert.Contains("CFG scale: 3.5,", parameters); // diffusers' Kontext inpainting default guidance
        Assert.Contains("Denoising strength: 0.5", parameters);
    }

    [Theory]
    [InlineData("fill", "generate", "inpaint --image")]
    [InlineData("fill", "img2img", "inpaint --image")]
    [InlineData("kontext", "inpaint", "--width and --height do not apply to FLUX.1-Kontext inpainting")]
    [InlineData("kontext", "img2img --strength 0.5", "--strength")]
    [InlineData("fill", "inpaint --true-cfg 2", "--true-cfg")]
    public void VerbsAModelLacksAreRefusedBeforeLoading(string model, string verbAndOptions, string expected)
    {
        var words = verbAndOptions.Split(' ');
        List<string> args = [words[0], .. Common(model == "fill" ? _fill : _kontext, Out()), .. words[1..]];
        if (words[0] != "generate") args.AddRange(["--image", _image]);
        if (words[0] == "inpaint") args.AddRange(["--mask", _mask]);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }
}
