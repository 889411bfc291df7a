using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>The tiny Flux pipeline folder, written once for the test class and loaded once.</summary>
public sealed class TinyFluxPipeline : IDisposable
{
    public TinyFluxPipeline()
    {
        Folder = Directory.CreateTempSubdirectory("tiny-flux").FullName;
        TinyFluxPipelineFolder.Write(Folder);
        Components = FluxComponents.FromPretrained(Folder, new PipelineLoadOptions());
    }

    public string Folder { get; }

    public FluxComponents Components { get; }

    public void Dispose()
    {
        Components.Dispose();
        Directory.Delete(Folder, recursive: true);
    }
}

/// <summary>
/// The Flux pipeline on a tiny random model (no diffusers fixture exists for Flux): what can be checked without one is
/// checked against diffusers' formulas, written out independently here.
/// </summary>
public sealed class FluxPipelineTests(TinyFluxPipeline tiny, Xunit.Abstractions.ITestOutputHelper log) : IClassFixture<TinyFluxPipeline>
{
    private static FluxRequest Small(long seed = 1) => new()
    {
        Prompt = "a red circle", NumInferenceSteps = 2, Height = 32, Width = 48,
        Generator = new Generator("cpu").ManualSeed(seed), MaxSequenceLength = 16,
    };

    /// <summary>
    /// LoadTextEncoders = false (diffusers' text_encoder=None, text_encoder_2=None, as for FLUX.1-Redux): the encoders are
    /// not loaded nor fetched (config only), prompt embeddings give the image the full components give, and a prompt is
    /// refused with the reason. The other families refuse the option.
    /// </summary>
    [Fact]
    public void WithoutTextEncodersEmbeddingsGiveTheSameImage()
    {
        var options = new PipelineLoadOptions { LoadTextEncoders = false };
        Assert.Superset(new HashSet<string> { "text_encoder", "text_encoder_2" }, options.HubOptions.ConfigOnlyComponents.ToHashSet());
        Assert.Contains("text_encoder_3", (new PipelineLoadOptions { LoadTextEncoder3 = false }).HubOptions.ConfigOnlyComponents);
        using var bare = FluxComponents.FromPretrained(tiny.Folder, options);
        Assert.Null(bare.TextEncoder);
        Assert.Null(bare.TextEncoder2);
        using var full = new FluxPipeline(tiny.Components);
        using var encoded = tiny.Components.CreatePromptEncoder().Encode("a red circle", null, null, null, 1, 16, CPU, ScalarType.Float32);
        var (embeds, pooled) = (encoded.PromptEmbeds, encoded.PooledPromptEmbeds);
        using var expected = full.Generate(Small());
        using var pipe = new FluxPipeline(bare);
        using var image = pipe.Generate(Small() with { Prompt = null, PromptEmbeds = embeds, PooledPromptEmbeds = pooled });
        Assert.Equal(expected.Images![0].Pixels, image.Images![0].Pixels);
        Assert.Contains("no text encoders", Assert.Throws<ArgumentException>(() => pipe.Generate(Small())).Message);
        Assert.Contains("applies to Flux", Assert.Throws<ArgumentException>(() =>
            DiffusersSharp.Pipelines.StableDiffusion3.StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, options)).Message);
    }

    [Fact]
    public void PackUnpackRoundTripIsBitExactAndFollowsDiffusersLayout()
    {
        torch.manual_seed(2);
        using var latents = randn(2, 16, 6, 8); // an image of 48 x 64 pixels
        using var packed = FluxPipeline.PackLatents(latents);
        Assert.Equal(new long[] { 2, 12, 64 }, packed.shape);
        var l = latents.data<float>().ToArray();
        var p = packed.data<float>().ToArray();
        // diffusers: view(B, C, h/2, 2, w/2, 2).permute(0, 2, 4, 1, 3, 5): token (i, j), channel c * 4 + dy * 2 + dx.
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++)
                    for (int c = 0; c < 16; c++)
                        for (int dy = 0; dy < 2; dy++)
                            for (int dx = 0; dx < 2; dx++)
                                Assert.Equal(l[((b * 16 + c) * 6 + 2 * i + dy) * 8 + 2 * j + dx], p[(b * 12 + i * 4 + j) * 64 + c * 4 + dy * 2 + dx]);
        using var unpacked = FluxPipeline.UnpackLatents(packed, 48, 64, 8);
        Assert.True(unpacked.equal(latents).all().item<bool>());
        Assert.Throws<ArgumentException>(() => FluxPipeline.UnpackLatents(packed, 64, 64, 8).Dispose());
    }

    [Fact]
    public void LatentImageIdsAreRowAndColumnOfEachPackedToken()
    {
        using var ids = FluxPipeline.LatentImageIds(2, 3, CPU, ScalarType.Float32);
        Assert.Equal(new float[] { 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 1, 0, 0, 1, 1, 0, 1, 2 }, ids.data<float>().ToArray());
    }

    [Theory]
    [InlineData(4, 64, 64)]
    [InlineData(7, 32, 48)]
    [InlineData(1, 16, 16)]
    public void SigmaScheduleAndMuAreDiffusersFormulas(int steps, int height, int width)
    {
        // Independent float64 evaluation: sigmas = np.linspace(1, 1/N, N); mu = calculate_shift(image tokens, 256, 4096,
        // 0.5, 1.15); the scheduler's exponential time shift e^mu / (e^mu + 1/s - 1); timesteps = sigma * 1000.
        int tokens = (height / 16) * (width / 16);
        double m = (1.15 - 0.5) / (4096 - 256), b = 0.5 - m * 256, mu = tokens * m + b;
        var config = ConfigJson.Parse<FlowMatchEulerDiscreteSchedulerConfig>(TinyFluxPipelineFolder.SchedulerConfig);
        Assert.Equal(mu, FluxPipeline.Mu(tokens, config), 12);
        var sigmas = FluxPipeline.DefaultSigmas(steps);
        var seen = new List<float>();
        using var pipe = new FluxPipeline(tiny.Components);
        using var result = pipe.Generate(Small() with
        {
            NumInferenceSteps = steps, Height = height, Width = width, OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => seen.Add(c.Timestep),
        });
        Assert.Equal(steps, seen.Count);
        for (int i = 0; i < steps; i++)
        {
            double s = steps == 1 ? 1.0 : 1.0 + i * (1.0 / steps - 1.0) / (steps - 1);
            Assert.Equal(s, sigmas[i], 6);
            double shifted = Math.Exp(mu) / (Math.Exp(mu) + (1 / s - 1));
            Assert.True(Math.Abs(seen[i] - shifted * 1000) <= 1e-3, $"step {i}: timestep {seen[i]} vs {shifted * 1000}");
        }
        Assert.Equal(1.0 / steps, sigmas[^1], 7);
    }

    [Fact]
    public void GeneratesTheRequestedSizeAndIsSeedReproducible()
    {
        using var pipe = new FluxPipeline(tiny.Components);
        using var a = pipe.Generate(Small(5) with { OutputType = OutputType.Tensor });
        using var b = pipe.Generate(Small(5) with { OutputType = OutputType.Tensor });
        using var c = pipe.Generate(Small(6) with { OutputType = OutputType.Tensor });
        Assert.Equal(new long[] { 1, 3, 32, 48 }, a.Tensor!.shape);
        Assert.True(a.Tensor.equal(b.Tensor!).all().item<bool>());
        Assert.False(a.Tensor.equal(c.Tensor!).all().item<bool>());
        using var images = pipe.Generate(Small(5) with { Prompt = new[] { "a", "b" }, NumImagesPerPrompt = 2 });
        Assert.Equal(4, images.Images!.Count);
        Assert.All(images.Images, i => Assert.Equal((48, 32, 3), (i.Width, i.Height, i.Channels)));
    }

    [Fact]
    public void NoiseIsDrawnUnpackedAtLatentSizeThenPacked()
    {
        // diffusers: randn_tensor([B, 16, 2*(H/16), 2*(W/16)], generator) then _pack_latents.
        using var pipe = new FluxPipeline(tiny.Components);
        using var drawn = pipe.Generate(Small(9) with { OutputType = OutputType.Latent });
        using var generator = new Generator("cpu").ManualSeed(9);
        using var noise = generator.Randn([1, 16, 4, 6], ScalarType.Float32, CPU);
        using var packed = FluxPipeline.PackLatents(noise);
        using var given = pipe.Generate(Small(123) with { OutputType = OutputType.Latent, Latents = packed });
        Assert.Equal(new long[] { 1, 6, 64 }, drawn.Tensor!.shape);
        Assert.True(drawn.Tensor.equal(given.Tensor!).all().item<bool>());
    }

    [Fact]
    public void GuidanceScaleGoesIntoTheGuidanceEmbedding()
    {
        using var pipe = new FluxPipeline(tiny.Components);
        using var a = pipe.Generate(Small() with { OutputType = OutputType.Latent });
        using var b = pipe.Generate(Small() with { OutputType = OutputType.Latent, GuidanceScale = 1.0 });
        Assert.True(TensorAssert.MaxAbsDiff(a.Tensor!, b.Tensor!) > 1e-4);
    }

    [Fact]
    public void TrueCfgChangesTheResultOnlyAboveOneWithANegativePrompt()
    {
        using var pipe = new FluxPipeline(tiny.Components);
        FluxRequest R() => Small(4) with { OutputType = OutputType.Latent };
        using var plain = pipe.Generate(R());
        using var scaleOne = pipe.Generate(R() with { NegativePrompt = "blurry", TrueCfgScale = 1.0 });
        using var noNegative = pipe.Generate(R() with { TrueCfgScale = 4.0 });
        using var trueCfg = pipe.Generate(R() with { NegativePrompt = "blurry", TrueCfgScale = 4.0 });
        Assert.True(plain.Tensor!.equal(scaleOne.Tensor!).all().item<bool>());
        Assert.True(plain.Tensor.equal(noNegative.Tensor!).all().item<bool>());
        double diff = TensorAssert.MaxAbsDiff(trueCfg.Tensor!, plain.Tensor);
        log.WriteLine($"true CFG 4 vs off: max |diff| {diff:G4}");
        Assert.True(diff > 1e-3);
        Assert.False(FluxPipeline.DoesTrueCfg(R() with { TrueCfgScale = 4.0 }));
        Assert.True(FluxPipeline.DoesTrueCfg(R() with { NegativePrompt = "", TrueCfgScale = 1.5 }));
    }

    [Fact]
    public void TrueCfgWithNegativeEmbeddingsIsTheDiffusersCombination()
    {
        // With negative embeddings equal to the positive ones, neg + s * (pos - neg) = pos: the result equals no CFG.
        using var pipe = new FluxPipeline(tiny.Components);
        var encoder = tiny.Components.CreatePromptEncoder();
        using var _ = inference_mode();
        using var encoded = encoder.Encode("a red circle", null, null, null, 1, 16, CPU, ScalarType.Float32);
        FluxRequest R() => Small(4) with { Prompt = null, PromptEmbeds = encoded.PromptEmbeds, PooledPromptEmbeds = encoded.PooledPromptEmbeds, OutputType = OutputType.Latent };
        using var plain = pipe.Generate(R());
        using var same = pipe.Generate(R() with { NegativePromptEmbeds = encoded.PromptEmbeds, NegativePooledPromptEmbeds = encoded.PooledPromptEmbeds, TrueCfgScale = 3 });
        using var fromPrompt = pipe.Generate(Small(4) with { OutputType = OutputType.Latent });
        TensorAssert.Close(same.Tensor!, plain.Tensor!, 1e-5, "true CFG with equal negatives");
        Assert.True(plain.Tensor!.equal(fromPrompt.Tensor!).all().item<bool>());
    }

    [Fact]
    public void CallbackSeesEveryStepAndCanInterrupt()
    {
        using var pipe = new FluxPipeline(tiny.Components);
        var seen = new List<(int Step, float Timestep)>();
        using var result = pipe.Generate(Small() with
        {
            NumInferenceSteps = 4, OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => { seen.Add((c.Step, c.Timestep)); Assert.Equal(new long[] { 1, 6, 64 }, c.Latents.shape); c.Interrupt = c.Step == 1; },
        });
        Assert.Equal([0, 1], seen.Select(s => s.Step));
        Assert.Equal(1000f, seen[0].Timestep); // sigma 1 stays 1 under any shift
    }

    [Fact]
    public void CallbackCanReplaceLatentsAndDecodePreviews()
    {
        using var pipe = new FluxPipeline(tiny.Components);
        pipe.Generate(Small() with { OutputType = OutputType.Latent }).Dispose(); // warm-up
        long before = LiveTensors.Count();
        int previews = 0;
        using (var zeroed = pipe.Generate(Small() with
        {
            OutputType = OutputType.Latent, NumInferenceSteps = 3,
            CallbackOnStepEnd = c =>
            {
                var images = pipe.PreviewImages(c.Latents, 32, 48);
                previews += images.Count;
                Assert.Equal((48, 32), (images[0].Width, images[0].Height));
                c.Latents = zeros_like(c.Latents);
            },
        }))
        {
            using var scope = NewDisposeScope();
            Assert.True(zeroed.Tensor!.isfinite().all().item<bool>());
        }
        Assert.Equal(3, previews);
        Assert.Equal(before, LiveTensors.Count());
    }

    [Fact]
    public void CancellationStopsWithinOneStepAndFreesMemory()
    {
        using var pipe = new FluxPipeline(tiny.Components);
        using var cts = new CancellationTokenSource();
        pipe.Generate(Small()).Dispose(); // warm-up
        int steps = 0;
        long before = LiveTensors.Count();
        Assert.Throws<OperationCanceledException>(() => pipe.Generate(Small() with
        {
            NumInferenceSteps = 10,
            CallbackOnStepEnd = c => { steps++; if (c.Step == 2) cts.Cancel(); },
        }, null, cts.Token));
        Assert.Equal(3, steps);
        Assert.Equal(before, LiveTensors.Count());
    }

    [Fact]
    public void FolderLoadingMatchesTheModelIndexAndOffloadGivesTheSameImage()
    {
        Assert.True(FluxComponents.IsSupportedPipeline(ModelIndex.Read(tiny.Folder).ClassName));
        using var pipe = new FluxPipeline(tiny.Components);
        using var a = pipe.Generate(Small(3) with { OutputType = OutputType.Tensor });
        using var offloaded = FluxPipeline.FromPretrained(tiny.Folder, new PipelineLoadOptions { Offload = OffloadMode.Model });
        var moves = new List<string>();
        offloaded.Components.ModelMoved += m => moves.Add(m.ToString());
        using var b = offloaded.Generate(Small(3) with { OutputType = OutputType.Tensor });
        TensorAssert.Close(b.Tensor!, a.Tensor!, 1e-5, "offloaded pipeline");
        log.WriteLine(string.Join("\n", moves));
        Assert.NotEmpty(moves);
        var e = Assert.Throws<InvalidDataException>(() => FluxComponents.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions()));
        Assert.Contains("FluxPipeline", e.Message);
    }

    [Fact]
    public void InvalidRequestsAreRejectedBeforeCompute()
    {
        using var pipe = new FluxPipeline(tiny.Components);
        void Rejects(string fragment, FluxRequest r) => Assert.Contains(fragment, Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message);
        Rejects("multiples of 16", Small() with { Height = 40 });
        Rejects("at least 1", Small() with { NumInferenceSteps = 0 });
        Rejects("[1, 512]", Small() with { MaxSequenceLength = 513 });
        Rejects("finite", Small() with { TrueCfgScale = double.NaN });
        using var embeds = zeros(1, 16, 96);
        Rejects("not both", Small() with { PromptEmbeds = embeds });
        Rejects("pooled", Small() with { Prompt = null, PromptEmbeds = embeds });
        using var wrong = zeros(1, 16, 4, 6);
        Rejects("packed", Small() with { Latents = wrong });
        Rejects("generators", Small() with { Generator = null, Generators = [new Generator("cpu"), new Generator("cpu")] });
    }
}
