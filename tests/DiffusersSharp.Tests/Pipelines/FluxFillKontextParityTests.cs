using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// FluxFillPipeline and FluxKontextPipeline against diffusers' own runs on tiny transformers (fixtures
/// local-diffusers/flux-fill and flux-kontext, made by tools/reference/flux_fill_kontext.py with diffusers 0.36.0 on
/// torch 1.13 CPU, float32; their READMEs say how). Prompt embeddings come from the fixtures, so CLIP / T5 are not part
/// of this check. The bound is the Flux parity tests': 5e-5 x max(1, max |expected|). Measured here: Fill latents 1e-6 ..
/// 1.8e-5 (guidance 30, growing by about 4e-6 a step; of 3.5), images 1.2e-5 and 5.4e-6; Kontext latents 6e-7 .. 3.1e-6
/// (of 3.2 .. 4.1), images 2.9e-6 .. 3.1e-6. The auto-resize case runs 4095 input-image tokens (about 15 s on 2 cores).
/// </summary>
public sealed class FluxFillKontextParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 5e-5;

    private static ImageBuffer Fixture(string path) => ImageFile.LoadRgb(Fixtures.Path(path));

    /// <summary>Runs a case twice, as the script does: latents (checked at every step), then the decoded image.</summary>
    private void Check<T>(string fixture, Func<FluxComponents, T, FluxOutput> generate, T request, string name, long seed) where T : FluxRequest
    {
        var expected = Fixtures.Expected($"local-diffusers/{fixture}/expected.safetensors");
        using var components = LocalDiffusersFlux.Components($"local-diffusers/{fixture}/transformer");
        try
        {
            FluxParity.Check(r => generate(components, r), request with { PromptEmbeds = expected["in.prompt_embeds"], PooledPromptEmbeds = expected["in.pooled"] },
                expected, name, seed, Tolerance, output);
        }
        finally
        {
            foreach (var t in expected.Values) t.Dispose();
        }
    }

    private static FluxOutput Fill(FluxComponents c, FluxFillRequest r)
    {
        using var pipe = new FluxFillPipeline(c);
        return pipe.Generate(r);
    }

    private static FluxOutput Kontext(FluxComponents c, FluxKontextRequest r)
    {
        using var pipe = new FluxKontextPipeline(c);
        return pipe.Generate(r);
    }

    [Fact]
    public void FillWithDiffusersDefaultsMatchesDiffusers() => Check("flux-fill", Fill, new FluxFillRequest
    {
        Image = Fixture("tiny-sd3/init_image.png"), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
        Height = 64, Width = 64, NumInferenceSteps = 4,
    }, "fill", 42);

    [Fact]
    public void FillWithStrengthMatchesDiffusers() => Check("flux-fill", Fill, new FluxFillRequest
    {
        Image = Fixture("tiny-sd3/init_image.png"), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
        Height = 48, Width = 64, Strength = 0.75, NumInferenceSteps = 8, GuidanceScale = 10.0,
    }, "fill_strength", 123);

    [Fact]
    public void KontextWithAutoResizeMatchesDiffusers() => Check("flux-kontext", Kontext, new FluxKontextRequest
    {
        Image = Fixture("local-diffusers/flux-kontext/kontext_input.png"), Height = 48, Width = 64, MaxArea = 48 * 64,
        NumInferenceSteps = 3,
    }, "kontext", 42);

    [Fact]
    public void KontextTrueCfgMatchesDiffusers()
    {
        var expected = Fixtures.Expected("local-diffusers/flux-kontext/expected.safetensors");
        try
        {
            Check("flux-kontext", Kontext, new FluxKontextRequest
            {
                Image = Fixture("tiny-sd3/init_image.png"), MaxArea = 64 * 64, NumInferenceSteps = 3, GuidanceScale = 2.5,
                TrueCfgScale = 4.0, NegativePromptEmbeds = expected["in.neg_prompt_embeds"],
                NegativePooledPromptEmbeds = expected["in.neg_pooled"], AutoResize = false,
            }, "kontext_truecfg", 7);
        }
        finally
        {
            foreach (var t in expected.Values) t.Dispose();
        }
    }

    [Fact]
    public void KontextMaxAreaWithoutAutoResizeMatchesDiffusers() => Check("flux-kontext", Kontext, new FluxKontextRequest
    {
        Image = Fixture("local-diffusers/flux-kontext/kontext_input.png"), Height = 50, Width = 70, MaxArea = 4000,
        NumInferenceSteps = 2, AutoResize = false,
    }, "kontext_area", 5);
}
