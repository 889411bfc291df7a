using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Flux IP-Adapter against diffusers v0.36.0's own (fixture local-diffusers/flux-ip-adapter, made on this project's machine
/// by tools/reference/flux_ip_adapter.py; see its README): a tiny adapter in XLabs-AI/flux-ip-adapter's layout loaded by
/// FluxPipeline.load_ip_adapter into local-diffusers/flux's transformer, one transformer forward with image embeddings and
/// per-block scales [0.5, 1.2], and FluxPipeline runs given ip_adapter_image_embeds (scale 1.0, 0.6 with two images and two
/// images per prompt, 0.6 with true CFG and negative image embeddings) or an ip_adapter_image pixel tensor through the tiny
/// CLIP image encoder of local-diffusers/transformers-encoders (true CFG with diffusers' all-black negative image; the
/// reference's embeddings came from transformers' own CLIPVisionModelWithProjection); FluxImg2ImgPipeline /
/// FluxInpaintPipeline (scale 0.8), FluxControlNetPipeline (scale 0.8) and, on local-diffusers/flux-kontext's transformer
/// with the same file, FluxKontextPipeline / FluxKontextInpaintPipeline with true CFG (scale 0.7). Float32 on the CPU; the
/// bound is the Flux parity tests' 1e-5 x max(1, max |expected|). Measured (max |diff|): image projection 7.2e-7 (of 3.5),
/// transformer 4.1e-6 (of 2.25; without the image embeddings the output is 2.5 away); latents at every step 4.8e-7 ..
/// 8.1e-6 (of 4.4, ip_inpaint), Kontext 1.3e-5 (of 7.0, true CFG 4 over 1456 x 720 input tokens); images 2.5e-6 .. 4.2e-6;
/// our encoder's image embeddings 3.6e-7 and the black image's 6.0e-7 from transformers', its pixel values exact. The
/// worst, relative to its bound, is the images' 4.2e-6 against 1e-5, as in FluxParityTests. Image-to-image, inpainting and
/// ControlNet run without true CFG: those diffusers pipelines turn it on only for a negative prompt string, which needs
/// the text encoders.
/// </summary>
public sealed class FluxIpAdapterParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    internal const string Adapter = "local-diffusers/flux-ip-adapter/ip_adapter.safetensors";
    internal const string ImageEncoder = "local-diffusers/transformers-encoders/image_encoder";
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux-ip-adapter/expected.safetensors");
    private readonly List<FluxComponents> _components = [];

    private Tensor E(string key) => _expected[key];

    private void Close(Tensor actual, string key, double tolerance = Tolerance) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, E(key), tolerance, key):G3} (max |expected| {E(key).abs().max().item<float>():G3})");

    private FluxComponents Components(string? imageEncoder = null, string transformer = "local-diffusers/flux/transformer", string? controlNet = null)
    {
        var components = LocalDiffusersFlux.Components(transformer, controlNet);
        _components.Add(components);
        components.LoadIpAdapter(Fixtures.Path(Adapter), imageEncoder is null ? null : Fixtures.Path(imageEncoder));
        return components;
    }

    [Fact]
    public void TransformerForwardWithPerBlockScalesMatchesDiffusers()
    {
        var components = Components();
        components.SetIpAdapterScale([0.5, 1.2]);
        Assert.Equal([[0.5], [1.2]], components.Transformer.IpAdapterScales.Select(s => s.ToArray()).ToArray());
        using var _ = inference_mode();
        var projected = components.Transformer.EncoderHidProj!.forward([E("tf.ip_image_embeds")]);
        Close(projected[0], "tf.projected");
        using var actual = components.Transformer.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.pooled"),
            E("tf.timestep"), E("tf.img_ids"), E("tf.txt_ids"), E("tf.guidance"), ip_adapter_image_embeds: [E("tf.ip_image_embeds")]);
        Close(actual, "tf.out");
        // The adapter matters: without image embeddings the output moves by far more than the bound.
        using var plain = components.Transformer.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.pooled"),
            E("tf.timestep"), E("tf.img_ids"), E("tf.txt_ids"), E("tf.guidance"));
        double moved = (plain - E("tf.out")).abs().max().item<float>();
        output.WriteLine($"without image embeddings: {moved:G3} from diffusers' output");
        Assert.True(moved > 100 * Tolerance);
    }

    /// <summary>Runs the case twice, as the script does: latents (checked at every step), then the decoded image.</summary>
    private void Check(FluxPipeline pipe, FluxRequest request, string name, long seed) => Check(r => pipe.Generate(r), request, name, seed);

    private void Check<T>(Func<T, FluxOutput> generate, T request, string name, long seed) where T : FluxRequest
    {
        int steps = 0;
        T With(OutputType type, bool steps) => request with
        {
            PromptEmbeds = E("in.prompt_embeds"), PooledPromptEmbeds = E("in.pooled"), Generator = new Generator("cpu").ManualSeed(seed),
            OutputType = type, CallbackOnStepEnd = steps ? Step : null,
        };
        void Step(StepEndContext context)
        {
            steps++;
            Close(context.Latents, $"{name}.step{context.Step}.latents");
        }
        using (var latents = generate(With(OutputType.Latent, true))) Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(_expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        using var image = generate(With(OutputType.Numpy, false));
        Close(image.Tensor!, $"{name}.image");
    }

    /// <summary>Scale 1.0 (the loaded default). diffusers needed the negative embeddings (it encodes them even without true
    /// CFG); here the negative side is not computed without true CFG, so none is passed.</summary>
    [Fact]
    public void ImageEmbedsMatchDiffusers()
    {
        using var pipe = new FluxPipeline(Components());
        Check(pipe, new FluxRequest { Height = 48, Width = 64, NumInferenceSteps = 3, GuidanceScale = 3.5, IpAdapterImageEmbeds = [E("in.image_embeds")] }, "ip", 11);
        Assert.Equal([[1.0], [1.0]], pipe.Components.Transformer.IpAdapterScales.Select(s => s.ToArray()).ToArray());
    }

    /// <summary>Scale 0.6 for the call, two images for the adapter ([1, 2, 24]) and two images per prompt.</summary>
    [Fact]
    public void ScaleTwoImagesAndImagesPerPromptMatchDiffusers()
    {
        using var pipe = new FluxPipeline(Components());
        using var two = cat([E("in.image_embeds"), E("in.image_embeds_2")], 1);
        Check(pipe, new FluxRequest
        {
            Height = 64, Width = 64, NumInferenceSteps = 3, GuidanceScale = 3.5, NumImagesPerPrompt = 2, IpAdapterScale = 0.6,
            IpAdapterImageEmbeds = [two],
        }, "ip_scale06", 12);
        // The call's scale is undone afterwards.
        Assert.Equal([[1.0], [1.0]], pipe.Components.Transformer.IpAdapterScales.Select(s => s.ToArray()).ToArray());
    }

    [Fact]
    public void TrueCfgWithNegativeImageEmbedsMatchesDiffusers()
    {
        using var pipe = new FluxPipeline(Components());
        pipe.Components.SetIpAdapterScale(0.6);
        Check(pipe, new FluxRequest
        {
            Height = 48, Width = 64, NumInferenceSteps = 3, GuidanceScale = 3.5, TrueCfgScale = 4.0,
            NegativePromptEmbeds = E("in.neg_prompt_embeds"), NegativePooledPromptEmbeds = E("in.neg_pooled"),
            IpAdapterImageEmbeds = [E("in.image_embeds")], NegativeIpAdapterImageEmbeds = [E("in.neg_image_embeds")],
        }, "ip_truecfg", 13);
    }

    /// <summary>
    /// The image path: a pixel tensor as ip_adapter_image, encoded by our CLIPVisionModelWithProjection, and no negative, so
    /// the negative pass of true CFG takes the all-black image through our CLIPImageProcessor and encoder, as diffusers does.
    /// </summary>
    [Fact]
    public void IpAdapterImageWithBlackNegativeMatchesDiffusers()
    {
        var components = Components(ImageEncoder);
        Assert.NotNull(components.ImageEncoder);
        using (var _ = inference_mode())
        {
            using var embeds = components.ImageEncoder!.Forward(E("in.pixel_values"));
            Close(embeds.ImageEmbeds.unsqueeze(0), "enc.image_embeds");
            using var black = components.FeatureExtractor!.Preprocess([new ImageBuffer(64, 48, 3)]);
            Close(black, "in.zero_pixel_values", 0);
            using var zero = components.ImageEncoder.Forward(black);
            Close(zero.ImageEmbeds.unsqueeze(0), "enc.zero_image_embeds");
        }
        using var pipe = new FluxPipeline(components);
        Check(pipe, new FluxRequest
        {
            Height = 48, Width = 64, NumInferenceSteps = 3, GuidanceScale = 3.5, TrueCfgScale = 3.0,
            NegativePromptEmbeds = E("in.neg_prompt_embeds"), NegativePooledPromptEmbeds = E("in.neg_pooled"),
            IpAdapterImage = [PipelineImage.FromTensor(E("in.pixel_values"))],
        }, "ip_image_truecfg", 14);
    }

    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        using var pipe = new FluxImg2ImgPipeline(Components());
        Check(r => pipe.Generate(r), new FluxImg2ImgRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Strength = 0.6, NumInferenceSteps = 5, GuidanceScale = 7.0,
            Height = 64, Width = 64, IpAdapterScale = 0.8, IpAdapterImageEmbeds = [E("in.image_embeds")],
        }, "ip_i2i", 21);
    }

    [Fact]
    public void InpaintingMatchesDiffusers()
    {
        using var pipe = new FluxInpaintPipeline(Components());
        Check(r => pipe.Generate(r), new FluxInpaintRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
            Strength = 0.8, NumInferenceSteps = 4, GuidanceScale = 7.0, Height = 64, Width = 64, IpAdapterScale = 0.8,
            IpAdapterImageEmbeds = [E("in.image_embeds")],
        }, "ip_inpaint", 22);
    }

    /// <summary>FluxControlNetPipeline: the ControlNet ignores the image embeddings, the transformer takes them.</summary>
    [Fact]
    public void ControlNetMatchesDiffusers()
    {
        using var pipe = new FluxControlNetPipeline(Components(controlNet: "local-diffusers/flux-controlnet/controlnet"));
        Check(r => pipe.Generate(r), new FluxControlNetRequest
        {
            ControlImage = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Height = 64, Width = 80, NumInferenceSteps = 4,
            GuidanceScale = 3.5, ControlNetConditioningScale = 0.6, IpAdapterScale = 0.8, IpAdapterImageEmbeds = [E("in.image_embeds")],
        }, "ip_controlnet", 31);
    }

    [Fact]
    public void KontextWithTrueCfgMatchesDiffusers()
    {
        using var pipe = new FluxKontextPipeline(Components(transformer: "local-diffusers/flux-kontext/transformer"));
        Check(r => pipe.Generate(r), new FluxKontextRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/flux-kontext/kontext_input.png")), Height = 48, Width = 64, MaxArea = 48 * 64,
            NumInferenceSteps = 3, TrueCfgScale = 4.0, NegativePromptEmbeds = E("in.neg_prompt_embeds"), NegativePooledPromptEmbeds = E("in.neg_pooled"),
            IpAdapterScale = 0.7, IpAdapterImageEmbeds = [E("in.image_embeds")], NegativeIpAdapterImageEmbeds = [E("in.neg_image_embeds")],
        }, "ip_kontext", 32);
    }

    [Fact]
    public void KontextInpaintingWithTrueCfgMatchesDiffusers()
    {
        using var pipe = new FluxKontextInpaintPipeline(Components(transformer: "local-diffusers/flux-kontext/transformer"));
        Check(r => pipe.Generate(r), new FluxKontextInpaintRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
            AutoResize = false, Strength = 0.75, NumInferenceSteps = 4, TrueCfgScale = 2.0,
            NegativePromptEmbeds = E("in.neg_prompt_embeds"), NegativePooledPromptEmbeds = E("in.neg_pooled"),
            IpAdapterScale = 0.7, IpAdapterImageEmbeds = [E("in.image_embeds")], NegativeIpAdapterImageEmbeds = [E("in.neg_image_embeds")],
        }, "ip_kontext_inpaint", 33);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var c in _components) c.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
