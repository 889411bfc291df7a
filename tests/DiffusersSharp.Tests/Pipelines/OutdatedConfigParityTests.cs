using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The SD 1.x / 2.x pipeline constructors' rewrites of outdated configs (steps_offset 1; clip_sample off for
/// text-to-image and image-to-image; skip_prk_steps on for inpainting; a pre-0.9 UNet's sample_size raised to 64; none
/// for ControlNet) against diffusers v0.36.0 (fixture local-diffusers/legacy-configs, made by
/// tools/reference/legacy_configs.py on tiny-sd15 with an outdated DDIM config, an outdated PNDM config and a diffusers 0.8
/// UNet config, all stored in the fixture): the values after construction, every step's timestep (exactly), every
/// step's latents, the final latents and the image; and, after <c>pipe.scheduler = EulerDiscreteScheduler.from_config(
/// pipe.scheduler.config, timestep_spacing="leading")</c>, the steps_offset from_config keeps (the file's key) or drops
/// (a key the file did not have). Bounds as the other UNet parity tests: 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class OutdatedConfigParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 5e-5;
    private const string Folder = "local-diffusers/legacy-configs/";
    private static readonly Dictionary<string, TorchSharp.torch.Tensor> Expected = Fixtures.Expected(Folder + "expected.safetensors");
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path("tiny-sd15/mask.png"));
    private readonly DirectoryInfo _temp = Directory.CreateTempSubdirectory("legacy-configs-");

    public void Dispose() => _temp.Delete(recursive: true);

    /// <summary>tiny-sd15 with the fixture's outdated scheduler config (<c>ddim</c> or <c>pndm</c>) and, if asked, its
    /// diffusers 0.8 UNet config, loaded as a model folder.</summary>
    private StableDiffusionComponents Load(string scheduler, bool oldUnet = false, string? controlnet = null)
    {
        string model = Path.Combine(_temp.FullName, $"{scheduler}{(oldUnet ? "-old-unet" : "")}");
        CopyFolder(Fixtures.Path("tiny-sd15/model"), model);
        File.Copy(Fixtures.Path($"{Folder}{scheduler}_scheduler_config.json"), Path.Combine(model, "scheduler", "scheduler_config.json"), overwrite: true);
        if (oldUnet) File.Copy(Fixtures.Path(Folder + "unet_config.json"), Path.Combine(model, "unet", "config.json"), overwrite: true);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "model_index.json")))!.AsObject();
        json["scheduler"] = new JsonArray("diffusers", scheduler == "ddim" ? "DDIMScheduler" : "PNDMScheduler");
        File.WriteAllText(Path.Combine(model, "model_index.json"), json.ToJsonString());
        return controlnet is null
            ? StableDiffusionComponents.FromPretrained(model, new PipelineLoadOptions())
            : StableDiffusionComponents.FromPretrained(model, new PipelineLoadOptions(), controlnet);
    }

    private static void CopyFolder(string from, string to)
    {
        foreach (string dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(dir.Replace(from, to, StringComparison.Ordinal));
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, file.Replace(from, to, StringComparison.Ordinal));
    }

    private static T Embeds<T>(T r) where T : StableDiffusionRequest => r with
    {
        PromptEmbeds = Expected["prompt_embeds"], NegativePromptEmbeds = Expected["negative_prompt_embeds"],
    };

    /// <summary>The scheduler's steps_offset, clip_sample and skip_prk_steps as it runs (the config's value, else the
    /// class default; -1 where the class has no such setting) and the UNet's sample_size, as the script records them.</summary>
    private static void CheckConfig(string name, StableDiffusionPipelineBase pipe)
    {
        var config = pipe.Components.SchedulerConfig;
        string className = pipe.Components.SchedulerClassName;
        double Value(string key, double classDefault) => config[key] is JsonValue v
            ? v.TryGetValue(out bool b) ? (b ? 1 : 0) : double.Parse(v.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture)
            : classDefault;
        double[] actual =
        [
            Value("steps_offset", 0),
            Value("clip_sample", className == "DDIMScheduler" ? 1 : -1),
            Value("skip_prk_steps", className == "PNDMScheduler" ? 0 : -1),
            pipe.DefaultSize / pipe.VaeScaleFactor,
        ];
        Assert.Equal(Expected[$"{name}.config"].data<float>().Select(v => (double)v).ToArray(), actual);
    }

    private void Check<T>(string name, StableDiffusionPipelineBase pipe, T request, long seed, Func<T, StableDiffusionPipelineOutput> generate)
        where T : StableDiffusionRequest
    {
        CheckConfig(name, pipe);
        StepParity.Check(output, Expected, Tolerance, name, Embeds(request), seed, generate);
    }

    [Fact]
    public void TextToImageFixesStepsOffsetClipSampleAndAnOldUnetsSampleSize()
    {
        using (var components = Load("ddim", oldUnet: true))
        using (var pipe = new StableDiffusionPipeline(components))
        {
            Assert.Equal(512, pipe.DefaultSize); // sample_size 8 raised to 64, times the VAE's 8
            Check("t2i_ddim", pipe, new StableDiffusionRequest { NumInferenceSteps = 4 }, 101, r => pipe.Generate(r));
        }
        using (var components = Load("pndm"))
        using (var pipe = new StableDiffusionPipeline(components))
            Check("t2i_pndm", pipe, new StableDiffusionRequest { NumInferenceSteps = 5, Height = 64, Width = 64 }, 102, r => pipe.Generate(r));
    }

    [Fact]
    public void ImageToImageFixesStepsOffsetAndKeepsPrkWarmUp()
    {
        using var components = Load("pndm");
        using var pipe = new StableDiffusionImg2ImgPipeline(components);
        Check("img2img_pndm", pipe, new StableDiffusionImg2ImgRequest { Image = Init, NumInferenceSteps = 10, Strength = 0.7 }, 103, r => pipe.Generate(r));
    }

    [Fact]
    public void InpaintingFixesStepsOffsetAndSkipPrkStepsButNotClipSample()
    {
        using (var components = Load("ddim"))
        using (var pipe = new StableDiffusionInpaintPipeline(components))
            Check("inpaint_ddim", pipe, new StableDiffusionInpaintRequest { Image = Init, MaskImage = Mask, NumInferenceSteps = 5, Height = 64, Width = 64 },
                104, r => pipe.Generate(r));
        using (var components = Load("pndm"))
        using (var pipe = new StableDiffusionInpaintPipeline(components))
            Check("inpaint_pndm", pipe, new StableDiffusionInpaintRequest
            {
                Image = Init, MaskImage = Mask, NumInferenceSteps = 5, Strength = 0.8, Height = 64, Width = 64,
            }, 105, r => pipe.Generate(r));
    }

    [Fact]
    public void ControlNetPipelineFixesNothing()
    {
        using var components = Load("ddim", controlnet: Fixtures.Path("local-diffusers/controlnet/sd15"));
        using var pipe = new StableDiffusionControlNetPipeline(components);
        var control = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png"));
        Check("controlnet_ddim", pipe, new StableDiffusionControlNetRequest { Image = control, NumInferenceSteps = 5, Height = 64, Width = 64 },
            106, r => pipe.Generate(r));
    }

    [Theory]
    [InlineData("ddim", 107L)] // steps_offset was not in the file: from_config drops the fixed value (Euler's default 0)
    [InlineData("pndm", 108L)] // steps_offset 0 was in the file: the fixed 1 carries over
    public void SwappingTheSchedulerAfterTheFixUpKeepsOnlyFileKeys(string scheduler, long seed)
    {
        using var components = Load(scheduler);
        using var pipe = new StableDiffusionPipeline(components);
        components.UseScheduler("EulerDiscreteScheduler", new Dictionary<string, JsonNode> { ["timestep_spacing"] = "leading" });
        Check($"swap_euler_{scheduler}", pipe, new StableDiffusionRequest { NumInferenceSteps = 5, Height = 64, Width = 64 }, seed, r => pipe.Generate(r));
    }

    [Fact]
    public void ConfigsThatAreCurrentAreLeftAlone()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        string before = components.SchedulerConfig.ToJsonString();
        using (new StableDiffusionPipeline(components)) { }
        using (new StableDiffusionInpaintPipeline(components)) { }
        Assert.Equal(before, components.SchedulerConfig.ToJsonString());
    }
}
