using DiffusersSharp.Images;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sd15 with a guidance-distilled UNet (time_cond_proj_dim 32: tiny-sd15's weights, cond_proj from fixture
/// local-diffusers/lcm) and the LCMScheduler from tiny-sd15's config, as tools/reference/lcm.py assembles it for diffusers.</summary>
public sealed class TinyLcm : IDisposable
{
    private readonly StableDiffusionComponents _sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
    private readonly StableDiffusionComponents _sdxl = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
    private readonly UNet2DConditionModel _unet, _xlUnet;

    public TinyLcm()
    {
        var expected = Fixtures.Expected("local-diffusers/lcm/expected.safetensors");
        _unet = WithCondProj(_sd15.Unet, expected["in.cond_proj.weight"]);
        _xlUnet = WithCondProj(_sdxl.Unet, expected["in.xl.cond_proj.weight"]);
        // These components borrow tiny-sd15's VAE: only the UNet is theirs to free (Dispose below).
        Components = new StableDiffusionComponents { Unet = _unet, Vae = _sd15.Vae, Device = CPU, Dtype = ScalarType.Float32 };
        var pndm = (System.Text.Json.Nodes.JsonObject)_sd15.SchedulerConfig.DeepClone();
        Components.UseScheduler(pndm);
        Components.UseScheduler("LCMScheduler"); // the script's LCMScheduler.from_config(tiny-sd15's PNDM config)
        XLComponents = new StableDiffusionComponents { Unet = _xlUnet, Vae = _sdxl.Vae, Device = CPU, Dtype = ScalarType.Float32 };
        XLComponents.UseScheduler((System.Text.Json.Nodes.JsonObject)_sdxl.SchedulerConfig.DeepClone());
        XLComponents.UseScheduler("LCMScheduler");
    }

    /// <summary>A UNet of <paramref name="source"/>'s config with time_cond_proj_dim 32: its weights and the fixture's cond_proj.</summary>
    private static UNet2DConditionModel WithCondProj(UNet2DConditionModel source, Tensor condProj)
    {
        var unet = new UNet2DConditionModel(source.Config with { TimeCondProjDim = 32 });
        using (no_grad())
        {
            var weights = source.state_dict();
            foreach (var (name, parameter) in unet.named_parameters())
                parameter.copy_(name == "time_embedding.cond_proj.weight" ? condProj : weights[name]);
        }
        unet.eval();
        return unet;
    }

    /// <summary>tiny-sdxl with that UNet (lcm-sdxl style) and the LCMScheduler from tiny-sdxl's config.</summary>
    public StableDiffusionComponents XLComponents { get; }

    /// <summary>The pipelines' components.</summary>
    public StableDiffusionComponents Components { get; }

    /// <summary>tiny-sd15's own components (a UNet without time_cond_proj_dim).</summary>
    public StableDiffusionComponents Sd15 => _sd15;

    public void Dispose()
    {
        _unet.Dispose();
        _xlUnet.Dispose();
        _sd15.Dispose();
        _sdxl.Dispose();
    }
}

/// <summary>
/// Guidance-distilled UNets (time_cond_proj_dim) and the LCM pipelines against diffusers' own (fixture local-diffusers/lcm,
/// made by tools/reference/lcm.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README says how): one UNet forward
/// with and without timestep_cond, the guidance-scale embedding, LatentConsistencyModelPipeline (defaults; two images, 3
/// steps from 20 original steps, guidance 4, 48 x 56), LatentConsistencyModelImg2ImgPipeline (defaults; strength 0.5, 3
/// steps) and StableDiffusionPipeline's timestep_cond path on the same UNet: every step's timestep, latents (and LCM's
/// denoised estimate), the final latents and the image, within the UNet parity bound 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class LatentConsistencyParityTests(TinyLcm model, ITestOutputHelper output) : IClassFixture<TinyLcm>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/lcm/expected.safetensors");
    private static readonly ImageBuffer Input = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png"));

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], Tolerance, key):G3} (max |expected| {Expected[key].abs().max().item<float>():G3})");

    /// <summary>Each step's denoised estimate, as the script's callback recorded it.</summary>
    private Action<StepEndContext> Denoised(string name) => c =>
    {
        Assert.NotNull(c.Denoised);
        Close(c.Denoised!, $"{name}.step{c.Step}.denoised");
    };

    [Fact]
    public void UNetForwardWithTimestepCondMatchesDiffusers()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var unet = model.Components.Unet;
        var (sample, text, cond) = (Expected["unet.sample"], Expected["unet.encoder_hidden_states"], Expected["unet.timestep_cond"]);
        Close(unet.forward(sample, tensor(499L), text, timestepCond: cond), "unet.out");
        Close(unet.forward(sample, tensor(499L), text), "unet.out_no_cond");
        // The condition does change the prediction (the check above is not vacuous).
        Assert.True((Expected["unet.out"] - Expected["unet.out_no_cond"]).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void GuidanceScaleEmbeddingMatchesDiffusers()
    {
        using var embedding = GuidanceScaleEmbedding.Create(8.5, 2, 32);
        Close(embedding, "embedding.w7_5");
        using var odd = GuidanceScaleEmbedding.Create(3.0, 1, 33);
        Assert.Equal([1L, 33L], odd.shape);
        Assert.Equal(0f, odd[0, 32].item<float>()); // an odd width is zero-padded
    }

    [Fact]
    public void TextToImageDefaultsMatchDiffusers()
    {
        using var pipe = new LatentConsistencyModelPipeline(model.Components);
        StepParity.Check(output, Expected, Tolerance, "t2i",
            new LatentConsistencyModelRequest { PromptEmbeds = Expected["in.prompt_embeds"], Height = 64, Width = 64 }, 11,
            r => pipe.Generate(r), Denoised("t2i"));
    }

    [Fact]
    public void TextToImageTwoImagesOriginalStepsMatchDiffusers()
    {
        using var pipe = new LatentConsistencyModelPipeline(model.Components);
        StepParity.Check(output, Expected, Tolerance, "t2i_two", new LatentConsistencyModelRequest
        {
            PromptEmbeds = Expected["in.prompt_embeds"], NumInferenceSteps = 3, OriginalInferenceSteps = 20, GuidanceScale = 4.0,
            NumImagesPerPrompt = 2, Height = 48, Width = 56,
        }, 12, r => pipe.Generate(r), Denoised("t2i_two"));
    }

    [Fact]
    public void ImageToImageDefaultsMatchDiffusers()
    {
        using var pipe = new LatentConsistencyModelImg2ImgPipeline(model.Components);
        StepParity.Check(output, Expected, Tolerance, "i2i",
            new LatentConsistencyModelImg2ImgRequest { PromptEmbeds = Expected["in.prompt_embeds"], Image = Input }, 13,
            r => pipe.Generate(r), Denoised("i2i"));
    }

    [Fact]
    public void ImageToImageHalfStrengthMatchesDiffusers()
    {
        using var pipe = new LatentConsistencyModelImg2ImgPipeline(model.Components);
        StepParity.Check(output, Expected, Tolerance, "i2i_half", new LatentConsistencyModelImg2ImgRequest
        {
            PromptEmbeds = Expected["in.prompt_embeds"], Image = Input, Strength = 0.5, NumInferenceSteps = 3, GuidanceScale = 2.0,
        }, 14, r => pipe.Generate(r), Denoised("i2i_half"));
    }

    [Fact]
    public void StableDiffusionPipelineTakesTheGuidanceEmbeddingInsteadOfCfg()
    {
        using var pipe = new StableDiffusionPipeline(model.Components);
        // Guidance 7.5 > 1 but no CFG on this UNet: the negative embeddings go unused, as in diffusers.
        StepParity.Check(output, Expected, Tolerance, "sd", new StableDiffusionRequest
        {
            PromptEmbeds = Expected["in.prompt_embeds"], NegativePromptEmbeds = Expected["in.negative_prompt_embeds"], NumInferenceSteps = 4,
            Height = 64, Width = 64,
        }, 15, r => pipe.Generate(r), c => Assert.Equal(1, c.PromptEmbeds.shape[0]));
    }

    [Fact]
    public void StableDiffusionXLPipelineTakesTheGuidanceEmbedding()
    {
        using var pipe = new StableDiffusionXLPipeline(model.XLComponents);
        StepParity.Check(output, Expected, Tolerance, "xl", new StableDiffusionRequest
        {
            PromptEmbeds = Expected["in.xl.prompt_embeds"], PooledPromptEmbeds = Expected["in.xl.pooled_prompt_embeds"], NumInferenceSteps = 4,
            GuidanceScale = 3.0, NumImagesPerPrompt = 2, Height = 64, Width = 64,
        }, 16, r => pipe.Generate(r), c => Assert.Equal([2L, 32L], c.TimestepCond!.shape));
    }

    [Fact]
    public void StableDiffusionXLImg2ImgPipelineTakesTheGuidanceEmbedding()
    {
        using var pipe = new StableDiffusionXLImg2ImgPipeline(model.XLComponents);
        StepParity.Check(output, Expected, Tolerance, "xl_i2i", new StableDiffusionImg2ImgRequest
        {
            PromptEmbeds = Expected["in.xl.prompt_embeds"], PooledPromptEmbeds = Expected["in.xl.pooled_prompt_embeds"], Image = Input,
            Strength = 0.6, NumInferenceSteps = 5, GuidanceScale = 6.0,
        }, 17, r => pipe.Generate(r));
    }

    [Fact]
    public void OnlyThePipelinesWhoseDiffusersTwinsComputeTimestepCondTakeIt()
    {
        using var pipe = new StableDiffusionPipeline(model.Components);
        // diffusers computes timestep_cond in the text-, image-to-image and inpaint pipelines and ControlNet / T2I-Adapter
        // text-to-image; its ControlNet image-to-image / inpaint and InstructPix2Pix pipelines run CFG on such a UNet.
        Assert.True(pipe.UsesGuidanceEmbedding(new StableDiffusionRequest()));
        Assert.True(pipe.UsesGuidanceEmbedding(new StableDiffusionImg2ImgRequest()));
        Assert.True(pipe.UsesGuidanceEmbedding(new StableDiffusionInpaintRequest()));
        Assert.True(pipe.UsesGuidanceEmbedding(new StableDiffusionControlNetRequest()));
        Assert.True(pipe.UsesGuidanceEmbedding(new StableDiffusionAdapterRequest()));
        Assert.False(pipe.UsesGuidanceEmbedding(new StableDiffusionControlNetImg2ImgRequest()));
        Assert.False(pipe.UsesGuidanceEmbedding(new StableDiffusionControlNetInpaintRequest()));
        Assert.False(pipe.UsesGuidanceEmbedding(new StableDiffusionInstructPix2PixRequest()));
        // A UNet without time_cond_proj_dim: only the LCM requests (which then refuse it).
        using var plain = new StableDiffusionPipeline(model.Sd15);
        Assert.False(plain.UsesGuidanceEmbedding(new StableDiffusionRequest()));
        Assert.True(plain.UsesGuidanceEmbedding(new LatentConsistencyModelRequest()));
    }

    [Fact]
    public void BadInputIsRefusedBeforeCompute()
    {
        using var scope = NewDisposeScope();
        var unet = model.Components.Unet;
        var (sample, text) = (zeros(2, 4, 8, 8), zeros(2, 77, 32));
        Assert.Contains("timestep_cond must be a floating [B=2, 32]",
            Assert.Throws<ArgumentException>(() => unet.forward(sample, tensor(1L), text, timestepCond: zeros(2, 31))).Message);
        Assert.Contains("timestep_cond must be a floating [B=2, 32]",
            Assert.Throws<ArgumentException>(() => unet.forward(sample, tensor(1L), text, timestepCond: zeros(1, 32))).Message);
        Assert.Contains("has no time_cond_proj_dim",
            Assert.Throws<ArgumentException>(() => model.Sd15.Unet.forward(sample, tensor(1L), text, timestepCond: zeros(2, 32))).Message);
        Assert.Contains("time_cond_proj_dim must be positive",
            Assert.Throws<ArgumentException>(() => (unet.Config with { TimeCondProjDim = 0 }).Validate()).Message);
        Assert.Contains("cannot load from an original single file", Assert.Throws<NotSupportedException>(
            () => UNet2DConditionModel.FromSingleFile("/nonexistent.safetensors", unet.Config)).Message);

        using var t2i = new LatentConsistencyModelPipeline(model.Components);
        var request = new LatentConsistencyModelRequest { PromptEmbeds = Expected["in.prompt_embeds"], Height = 64, Width = 64 };
        // diffusers' call has no negative_prompt (its **kwargs would swallow one silently): refused here.
        Assert.Contains("takes no negative prompt", Assert.Throws<ArgumentException>(
            () => t2i.Generate(request with { NegativePromptEmbeds = Expected["in.negative_prompt_embeds"] })).Message);
        Assert.Contains("takes no guidance_rescale", Assert.Throws<ArgumentException>(() => t2i.Generate(request with { GuidanceRescale = 0.5 })).Message);
        Assert.Contains("original_inference_steps (20)", Assert.Throws<ArgumentOutOfRangeException>(
            () => t2i.Generate(request with { NumInferenceSteps = 21, OriginalInferenceSteps = 20 })).Message);
        using (var plain = new LatentConsistencyModelPipeline(model.Sd15))
            Assert.Contains("needs a guidance-distilled UNet", Assert.Throws<ArgumentException>(() => plain.Generate(request)).Message);

        using var i2i = new LatentConsistencyModelImg2ImgPipeline(model.Components);
        var image = new LatentConsistencyModelImg2ImgRequest { PromptEmbeds = Expected["in.prompt_embeds"], Image = Input };
        Assert.Contains("takes no height / width", Assert.Throws<ArgumentException>(() => i2i.Generate(image with { Height = 64 })).Message);
        Assert.Contains("int(50 x 0.1) = 5", Assert.Throws<ArgumentOutOfRangeException>(
            () => i2i.Generate(image with { Strength = 0.1, NumInferenceSteps = 6 })).Message);
        Assert.Contains("strength", Assert.Throws<ArgumentException>(() => i2i.Generate(image with { Strength = 1.5 })).Message);
    }

    [Fact]
    public void OtherSchedulersAreRefusedByTheLcmPipelines()
    {
        var saved = model.Components.SchedulerConfig;
        try
        {
            model.Components.UseScheduler("euler");
            using var pipe = new LatentConsistencyModelPipeline(model.Components);
            Assert.Contains("takes the LCMScheduler's denoised estimate", Assert.Throws<ArgumentException>(
                () => pipe.Generate(new LatentConsistencyModelRequest { PromptEmbeds = Expected["in.prompt_embeds"] })).Message);
        }
        finally
        {
            model.Components.UseScheduler(saved);
        }
    }
}
