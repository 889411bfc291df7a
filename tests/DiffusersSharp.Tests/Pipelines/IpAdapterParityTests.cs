using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sd15 and tiny-sdxl, each with its tiny IP-Adapter of fixture local-diffusers/ip-adapter loaded, scale 0.7.</summary>
public sealed class LocalDiffusersIpAdapters : IDisposable
{
    /// <summary>Loads both.</summary>
    public LocalDiffusersIpAdapters()
    {
        Sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        Sd15.LoadIpAdapter(Fixtures.Path("local-diffusers/ip-adapter/sd15/ip-adapter.safetensors"));
        Sd15.SetIpAdapterScale(0.7);
        Sdxl = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        Sdxl.LoadIpAdapter(Fixtures.Path("local-diffusers/ip-adapter/sdxl/ip-adapter.safetensors"));
        Sdxl.SetIpAdapterScale(0.7);
    }

    /// <summary>tiny-sd15 + its IP-Adapter.</summary>
    public StableDiffusionComponents Sd15 { get; }

    /// <summary>tiny-sdxl + its IP-Adapter.</summary>
    public StableDiffusionComponents Sdxl { get; }

    /// <summary>A fresh tiny model (sd15 / sdxl) with the fixture's IP-Adapter Plus, scale 0.7.</summary>
    public static StableDiffusionComponents Plus(string name)
    {
        var components = StableDiffusionComponents.FromPretrained(Fixtures.Path($"tiny-{name}/model"), new PipelineLoadOptions());
        components.LoadIpAdapter(Fixtures.Path($"local-diffusers/ip-adapter/{name}/ip-adapter-plus.safetensors"));
        components.SetIpAdapterScale(0.7);
        return components;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Sd15.Dispose();
        Sdxl.Dispose();
    }
}

/// <summary>
/// IP-Adapter (plain: ImageProjection + IPAdapterAttnProcessor2_0) against diffusers v0.36.0's own on the tiny models
/// (fixture local-diffusers/ip-adapter, made on this project's machine by tools/reference/ip_adapter.py; see its README):
/// the tiny adapters loaded by diffusers' load_ip_adapter and set_ip_adapter_scale(0.7), one UNet forward with image
/// embeddings, and pipeline runs given ip_adapter_image_embeds (no CLIP image encoder ran in Python). Float32 on the CPU;
/// pipelines are compared at every step's latents, the final latents and the decoded image, timesteps exactly, within
/// 1e-5 x max(1, max |expected|) as the ControlNet parity tests; the UNet forward within the component bound 1e-4.
/// Measured (max |diff|): UNet forward sd15 7.8e-7 on outputs of 1.21, sdxl 8.4e-7 on 1.34 (the adapter moves those outputs
/// by 0.51); pipelines, worst latents / image: sd15 2.1e-5 on 24.5 / 1.2e-6, sd15_nocfg 3.8e-6 / 7.8e-7, sd15_two 1.5e-5 /
/// 1.1e-6, sdxl 2.4e-5 on 23.8 / 7.8e-7, sd15_plus 1.8e-5 / 8.9e-7, sdxl_plus 2.0e-5 on 17.5 / 1.3e-6, sd15_img2img 6.2e-6 /
/// 1.8e-6, sd15_controlnet 1.3e-5 / 7.8e-7: at most 1.1e-6 of the latents' size, about 9x below the bound.
/// </summary>
public sealed class IpAdapterParityTests(LocalDiffusersIpAdapters models, ITestOutputHelper output) : IClassFixture<LocalDiffusersIpAdapters>
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/ip-adapter/expected.safetensors");

    private static Generator Seed(long seed) => new Generator("cpu").ManualSeed(seed);

    private static Tensor WithZeroNegative(Tensor embeds) => cat([zeros_like(embeds), embeds], 0);

    private static StableDiffusionRequest Sd15(StableDiffusionRequest r) => r with
    {
        PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.neg_prompt_embeds"],
    };

    private static StableDiffusionRequest Sdxl(StableDiffusionRequest r) => r with
    {
        PromptEmbeds = Expected["in.sdxl.prompt_embeds"], PooledPromptEmbeds = Expected["in.sdxl.pooled"],
        NegativePromptEmbeds = Expected["in.sdxl.neg_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.sdxl.neg_pooled"],
    };

    private void Check(string name, StableDiffusionRequest request, long seed, Func<StableDiffusionRequest, StableDiffusionPipelineOutput> generate)
    {
        var steps = new List<(float Timestep, Tensor Latents)>();
        using var latents = generate(request with
        {
            Generator = Seed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => steps.Add((c.Timestep, c.Latents.clone().DetachFromDisposeScope())),
        });
        int expectedSteps = Expected.Keys.Count(k => k.StartsWith($"{name}.step") && k.EndsWith(".latents"));
        Assert.Equal(expectedSteps, steps.Count);
        double worstStep = 0;
        for (int i = 0; i < steps.Count; i++)
        {
            Assert.Equal(Expected[$"{name}.step{i}.timestep"].item<float>(), steps[i].Timestep);
            worstStep = Math.Max(worstStep, TensorAssert.Close(steps[i].Latents, Expected[$"{name}.step{i}.latents"], Tolerance, $"{name} step {i}"));
            steps[i].Latents.Dispose();
        }
        double latentError = TensorAssert.Close(latents.Tensor!, Expected[$"{name}.latents"], Tolerance, $"{name} latents");
        using var image = generate(request with { Generator = Seed(seed), OutputType = OutputType.Numpy });
        double imageError = TensorAssert.Close(image.Tensor!, Expected[$"{name}.image"], Tolerance, $"{name} image");
        output.WriteLine($"{name}: {steps.Count} steps, worst step latents {worstStep:G3}, final latents {latentError:G3} " +
                         $"(max |latents| {Expected[$"{name}.latents"].abs().max().item<float>():G3}), image {imageError:G3}");
    }

    [Theory]
    [InlineData("sd15")]
    [InlineData("sdxl")]
    public void UnetForwardWithImageEmbedsMatchesDiffusers(string name)
    {
        var unet = (name == "sd15" ? models.Sd15 : models.Sdxl).Unet;
        using var _ = inference_mode();
        string p = $"fwd.{name}.";
        using var projected = unet.EncoderHidProj!.forward([Expected[p + "image_embeds"]])[0];
        double projError = TensorAssert.Close(projected, Expected[p + "projected"], 1e-4, $"{name} projection");
        using var y = unet.forward(Expected[p + "sample"], Expected[p + "t"], Expected[p + "states"],
            name == "sdxl" ? Expected[p + "text_embeds"] : null, name == "sdxl" ? Expected[p + "time_ids"] : null,
            imageEmbeds: [Expected[p + "image_embeds"]]);
        double error = TensorAssert.Close(y, Expected[p + "unet"], 1e-4, $"{name} unet");
        output.WriteLine($"{name}: projection {projError:G3}, UNet {error:G3} (max |expected| {Expected[p + "unet"].abs().max().item<float>():G3})");
    }

    [Fact]
    public void Sd15MatchesDiffusers()
    {
        using var pipe = new StableDiffusionPipeline(models.Sd15);
        var image = Expected["in.image_embeds"];
        Check("sd15", Sd15(new() { NumInferenceSteps = 8, Height = 64, Width = 64, IpAdapterImageEmbeds = [WithZeroNegative(image)] }), 31, r => pipe.Generate(r));
        Check("sd15_nocfg", Sd15(new() { NumInferenceSteps = 6, GuidanceScale = 1.0, Height = 64, Width = 80, IpAdapterImageEmbeds = [image] }), 32, r => pipe.Generate(r));
        var two = cat([image, Expected["in.image_embeds_2"]], 1);
        Check("sd15_two", Sd15(new() { NumInferenceSteps = 6, Height = 64, Width = 64, NumImagesPerPrompt = 2, IpAdapterImageEmbeds = [WithZeroNegative(two)] }),
            33, r => pipe.Generate(r));
    }

    /// <summary>Image-to-image and ControlNet text-to-image with the plain adapter (the same request members in every mode).</summary>
    [Fact]
    public void OtherModesMatchDiffusers()
    {
        var embeds = WithZeroNegative(Expected["in.image_embeds"]);
        using (var pipe = new StableDiffusionImg2ImgPipeline(models.Sd15))
            Check("sd15_img2img", new StableDiffusionImg2ImgRequest
            {
                PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.neg_prompt_embeds"],
                Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png")), Strength = 0.6, NumInferenceSteps = 8, IpAdapterImageEmbeds = [embeds],
            }, 61, r => pipe.Generate((StableDiffusionImg2ImgRequest)r));
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions(),
            Fixtures.Path("local-diffusers/controlnet/sd15"));
        components.LoadIpAdapter(Fixtures.Path("local-diffusers/ip-adapter/sd15/ip-adapter.safetensors"));
        using var cn = new StableDiffusionControlNetPipeline(components);
        Check("sd15_controlnet", new StableDiffusionControlNetRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.neg_prompt_embeds"],
            Image = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png")), NumInferenceSteps = 6, ControlNetConditioningScale = 0.8,
            IpAdapterImageEmbeds = [embeds], IpAdapterScale = 0.7,
        }, 62, r => cn.Generate((StableDiffusionControlNetRequest)r));
    }

    /// <summary>IP-Adapter Plus (the Resampler, from h94's key names with to_kv split) given image features, both halves drawn.</summary>
    [Fact]
    public void PlusMatchesDiffusers()
    {
        var features = Expected["in.plus_features"];
        using (var components = LocalDiffusersIpAdapters.Plus("sd15"))
        {
            using (inference_mode())
            using (var projected = components.Unet.EncoderHidProj!.forward([features])[0])
                output.WriteLine($"sd15_plus projection: {TensorAssert.Close(projected, Expected["fwd.sd15_plus.projected"], 1e-4, "plus projection"):G3}");
            using var pipe = new StableDiffusionPipeline(components);
            Check("sd15_plus", Sd15(new() { NumInferenceSteps = 6, Height = 64, Width = 64, IpAdapterImageEmbeds = [features] }), 51, r => pipe.Generate(r));
        }
        using (var components = LocalDiffusersIpAdapters.Plus("sdxl"))
        {
            using var pipe = new StableDiffusionXLPipeline(components);
            Check("sdxl_plus", Sdxl(new() { NumInferenceSteps = 6, Height = 64, Width = 64, IpAdapterImageEmbeds = [features] }), 52, r => pipe.Generate(r));
        }
    }

    [Fact]
    public void SdxlMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLPipeline(models.Sdxl);
        Check("sdxl", Sdxl(new() { NumInferenceSteps = 8, Height = 64, Width = 64, IpAdapterImageEmbeds = [WithZeroNegative(Expected["in.image_embeds"])] }),
            41, r => pipe.Generate(r));
    }
}
