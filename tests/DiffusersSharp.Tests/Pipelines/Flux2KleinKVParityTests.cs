using DiffusersSharp.Images;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Flux2KleinKVPipeline and the transformer's KV-cache forwards against diffusers' own runs on the tiny FLUX.2 [klein]
/// model (fixture local-diffusers/flux2-klein/kv.safetensors, made by tools/reference/flux2_klein_kv.py with diffusers
/// 0.39.0 on torch 1.13 CPU, float32): one and two reference images (step 0 extracts the reference keys / values, later
/// steps reuse them), two prompts × two images, and no reference image (standard forwards). Prompt embeddings come from the
/// fixture. The bound, 1e-5 × max(1, max |expected|), is the other flow pipelines'.
/// </summary>
public sealed class Flux2KleinKVParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux2-klein/kv.safetensors");
    private readonly Dictionary<string, Tensor> _inputs = Fixtures.Expected("local-diffusers/flux2-klein/expected.safetensors");
    private readonly Flux2KleinComponents _distilled = LocalDiffusersFlux2Klein.Components(distilled: true);

    private Tensor E(string key) => _expected[key];

    private void Check(Flux2KleinRequest request, string name, long seed)
    {
        using var pipe = new Flux2KleinKVPipeline(_distilled);
        LocalDiffusersFlux2Klein.CheckCase(output, _expected, Tolerance, r => pipe.Generate(r), request, name, seed);
    }

    [Fact]
    public void OneReferenceImageMatchesDiffusers() =>
        // 90 x 70: floored to 88 x 64 and centre-cropped; the output takes its size. Step 0 extracts, steps 1 and 2 reuse.
        Check(new Flux2KleinRequest
        {
            Images = [LocalDiffusersFlux2Klein.Pixels(_inputs["in.odd"])], PromptEmbeds = _inputs["in.prompt_embeds"][..1], NumInferenceSteps = 3,
        }, "kv_ref", 31);

    [Fact]
    public void TwoReferenceImagesAndTwoImagesPerPromptMatchDiffusers() =>
        Check(new Flux2KleinRequest
        {
            Images = [ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), LocalDiffusersFlux2Klein.Pixels(_inputs["in.wide"])],
            PromptEmbeds = _inputs["in.prompt_embeds"], Height = 48, Width = 48, NumInferenceSteps = 2, NumImagesPerPrompt = 2,
        }, "kv_two", 32);

    [Fact]
    public void WithoutReferenceImagesEveryStepIsTheStandardForward() =>
        Check(new Flux2KleinRequest { PromptEmbeds = _inputs["in.prompt_embeds"][1..], Height = 32, Width = 48, NumInferenceSteps = 2 }, "kv_t2i", 33);

    [Fact]
    public void ExtractThenCachedForwardsMatchDiffusers()
    {
        // Batch 2: 6 reference tokens (t = 10) first, then 8 image tokens, ref_fixed_timestep 0.25; then a cached forward of
        // other image tokens at another timestep with the cache the extract forward returned.
        var transformer = _distilled.Transformer;
        var text = _inputs["in.prompt_embeds"];
        var txtIds = E("tf.txt_ids");
        var (extracted, cache) = transformer.ForwardKVExtract(cat([E("tf.ref"), E("tf.noisy")], 1), text, E("tf.t0"),
            cat([E("tf.ref_ids"), E("tf.img_ids")], 0), txtIds, numRefTokens: 6, refFixedTimestep: 0.25);
        using (cache)
        using (extracted)
        {
            Assert.Equal(6, cache.NumRefTokens);
            double extractError = TensorAssert.Close(extracted, E("tf.extract"), Tolerance, "extract");
            // diffusers keeps [B, tokens, heads, head_dim]; the cache here is [B, heads, tokens, head_dim].
            double keyError = TensorAssert.Close(cache.DoubleBlockCaches[0].KRef!.transpose(1, 2), E("tf.cache.double0.k"), Tolerance, "double 0 k");
            double valueError = TensorAssert.Close(cache.SingleBlockCaches[1].VRef!.transpose(1, 2), E("tf.cache.single1.v"), Tolerance, "single 1 v");
            using var cached = transformer.ForwardKVCached(E("tf.noisy2"), text, E("tf.t1"), E("tf.img_ids"), txtIds, cache);
            double cachedError = TensorAssert.Close(cached, E("tf.cached"), Tolerance, "cached");
            output.WriteLine($"extract {extractError:G3}, cached keys {keyError:G3}, values {valueError:G3}, cached forward {cachedError:G3}");

            // A cached forward differs from the standard forward of the same tokens (the reference keys are attended to).
            using var standard = transformer.Forward(E("tf.noisy2"), text, E("tf.t1"), E("tf.img_ids"), txtIds);
            Assert.True(TensorAssert.MaxAbsDiff(standard, E("tf.cached")) > 1e-3);
        }
    }

    [Fact]
    public void GenerationFreesTheKVCache()
    {
        // The cached keys / values live outside the dispose scopes: they must be freed when the call ends, also on interrupt.
        using var pipe = new Flux2KleinKVPipeline(_distilled);
        var request = new Flux2KleinRequest
        {
            Images = [LocalDiffusersFlux2Klein.Pixels(_inputs["in.odd"])], PromptEmbeds = _inputs["in.prompt_embeds"][..1], NumInferenceSteps = 3,
            OutputType = OutputType.Numpy, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(1),
        };
        using (var warm = pipe.Generate(request)) { }
        long before = LiveTensors.Count();
        using (var again = pipe.Generate(request)) { }
        Assert.Equal(before, LiveTensors.Count());
        using (var interrupted = pipe.Generate(request with { CallbackOnStepEnd = c => c.Interrupt = c.Step == 1 })) { }
        Assert.Equal(before, LiveTensors.Count());
    }

    [Fact]
    public void BadKVInputsAreRefusedBeforeCompute()
    {
        var transformer = _distilled.Transformer;
        var text = _inputs["in.prompt_embeds"];
        var txtIds = E("tf.txt_ids");
        var hidden = cat([E("tf.ref"), E("tf.noisy")], 1);
        var ids = cat([E("tf.ref_ids"), E("tf.img_ids")], 0);
        Assert.Throws<ArgumentException>(() => transformer.ForwardKVExtract(hidden, text, E("tf.t0"), ids, txtIds, numRefTokens: 0));
        Assert.Throws<ArgumentException>(() => transformer.ForwardKVExtract(hidden, text, E("tf.t0"), ids, txtIds, numRefTokens: 14));
        Assert.Throws<ArgumentException>(() => transformer.ForwardKVExtract(hidden, text, E("tf.t0"), ids, txtIds, 6, double.NaN));
        using (var empty = new Flux2KVCache(2, 2))
            Assert.Throws<ArgumentException>(() => transformer.ForwardKVCached(E("tf.noisy2"), text, E("tf.t1"), E("tf.img_ids"), txtIds, empty));
        using (var wrongLayers = new Flux2KVCache(1, 2))
            Assert.Throws<ArgumentException>(() => transformer.ForwardKVCached(E("tf.noisy2"), text, E("tf.t1"), E("tf.img_ids"), txtIds, wrongLayers));
        var (sample, cache) = transformer.ForwardKVExtract(hidden, text, E("tf.t0"), ids, txtIds, 6);
        using (sample)
        using (cache)
        {
            // The cache holds a batch of 2: a batch of 1 is refused; a cleared cache too.
            var ex = Assert.Throws<ArgumentException>(() => transformer.ForwardKVCached(E("tf.noisy2")[..1], text[..1], E("tf.t1")[..1], E("tf.img_ids"), txtIds, cache));
            Assert.Contains("batch", ex.Message);
            cache.Clear();
            Assert.Throws<ArgumentException>(() => transformer.ForwardKVCached(E("tf.noisy2"), text, E("tf.t1"), E("tf.img_ids"), txtIds, cache));
        }

        using var pipe = new Flux2KleinKVPipeline(_distilled);
        var embeds = _inputs["in.prompt_embeds"][..1];
        Assert.False(pipe.DoesCfg(new Flux2KleinRequest { PromptEmbeds = embeds, GuidanceScale = 7 }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(new Flux2KleinRequest { PromptEmbeds = embeds, Height = 32, Width = 32, GuidanceScale = 7 }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(new Flux2KleinRequest
        {
            PromptEmbeds = embeds, NegativePromptEmbeds = _inputs["in.negative_prompt_embeds"][..1], Height = 32, Width = 32,
        }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(new Flux2KleinRequest { PromptEmbeds = embeds, Height = 36, Width = 32 }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(new Flux2KleinRequest { PromptEmbeds = embeds, Images = [new ImageBuffer(8, 8, 3, new byte[8 * 8 * 3])] }));
    }

    [Fact]
    public void AKVPipelineFolderLoadsAndMatchesDiffusers()
    {
        // The fixture folder with model_index.json's class Flux2KleinKVPipeline (what diffusers' save_pretrained writes for
        // this pipeline), loaded without text encoders; then the one-reference case.
        Assert.True(Flux2KleinComponents.IsSupportedPipeline(Flux2KleinComponents.Flux2KleinKVPipelineClass));
        string folder = Path.Combine(Path.GetTempPath(), "flux2-klein-kv-" + Guid.NewGuid().ToString("N"));
        try
        {
            foreach (var sub in new[] { "transformer", "vae", "scheduler" })
            {
                Directory.CreateDirectory(Path.Combine(folder, sub));
                foreach (var file in Directory.GetFiles(Path.Combine(LocalDiffusersFlux2Klein.Folder, sub)))
                    File.Copy(file, Path.Combine(folder, sub, Path.GetFileName(file)));
            }
            var index = File.ReadAllText(Path.Combine(LocalDiffusersFlux2Klein.Folder, "model_index.json"))
                .Replace("\"Flux2KleinPipeline\"", "\"Flux2KleinKVPipeline\"", StringComparison.Ordinal);
            File.WriteAllText(Path.Combine(folder, "model_index.json"), index);
            using var pipe = Flux2KleinKVPipeline.FromPretrained(folder, new PipelineLoadOptions { LoadTextEncoders = false });
            Assert.Equal("Flux2KleinKVPipeline", pipe.Components.PipelineClass);
            LocalDiffusersFlux2Klein.CheckCase(output, _expected, Tolerance, r => pipe.Generate(r), new Flux2KleinRequest
            {
                Images = [LocalDiffusersFlux2Klein.Pixels(_inputs["in.odd"])], PromptEmbeds = _inputs["in.prompt_embeds"][..1], NumInferenceSteps = 3,
            }, "kv_ref", 31);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    public void Dispose()
    {
        _distilled.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
        foreach (var t in _inputs.Values) t.Dispose();
    }
}
