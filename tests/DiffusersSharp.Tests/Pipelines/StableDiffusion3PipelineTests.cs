using System.Diagnostics;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>Behaviour of the SD3 pipelines on the tiny model: parameters, batching, callbacks, cancellation, memory.</summary>
public sealed class StableDiffusion3PipelineTests(Xunit.Abstractions.ITestOutputHelper log) : IClassFixture<TinySd3Pipeline>
{
    private static StableDiffusion3Request Small(long seed = 1) => new()
    {
        Prompt = "a red circle", NumInferenceSteps = 2, GuidanceScale = 4.0, Height = 32, Width = 48,
        Generator = new Generator("cpu").ManualSeed(seed), MaxSequenceLength = 16,
    };

    [Fact]
    public void SameSeedSameImageDifferentSeedDifferentImage()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        using var a = pipe.Generate(Small(5) with { OutputType = OutputType.Tensor });
        using var b = pipe.Generate(Small(5) with { OutputType = OutputType.Tensor });
        using var c = pipe.Generate(Small(6) with { OutputType = OutputType.Tensor });
        Assert.Equal(new long[] { 1, 3, 32, 48 }, a.Tensor!.shape);
        Assert.True(a.Tensor.equal(b.Tensor!).all().item<bool>());
        Assert.False(a.Tensor.equal(c.Tensor!).all().item<bool>());
    }

    [Fact]
    public void ImagesPerPromptAndPromptBatchesMultiplyAndKeepPromptsContiguous()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        using var result = pipe.Generate(Small() with { Prompt = new[] { "a red circle", "a blue square" }, NumImagesPerPrompt = 2 });
        Assert.Equal(4, result.Images!.Count);
        Assert.All(result.Images, i => Assert.Equal((48, 32, 3), (i.Width, i.Height, i.Channels)));

        var encoder = TinySd3Pipeline.Shared.CreatePromptEncoder();
        using var _ = inference_mode();
        using var one = encoder.Encode(new StableDiffusion3Request { Prompt = new[] { "a red circle", "a blue square" }, MaxSequenceLength = 16 }, false, CPU);
        using var two = encoder.Encode(new StableDiffusion3Request { Prompt = new[] { "a red circle", "a blue square" }, MaxSequenceLength = 16, NumImagesPerPrompt = 2 }, false, CPU);
        Assert.Equal(new long[] { 4, 77 + 16, 96 }, two.PromptEmbeds.shape);
        // diffusers' repeat(1, n, 1).view(B*n, ...): the copies of one prompt are adjacent.
        Assert.True(two.PromptEmbeds[1].equal(one.PromptEmbeds[0]).all().item<bool>());
        Assert.True(two.PromptEmbeds[2].equal(one.PromptEmbeds[1]).all().item<bool>());
        Assert.Null(one.NegativePromptEmbeds);
    }

    [Fact]
    public void WithoutT5TheT5PartIsZerosOfMaxSequenceLength()
    {
        var c = TinySd3Pipeline.Shared;
        var encoder = new StableDiffusion3PromptEncoder(c.Tokenizer, c.TextEncoder, c.Tokenizer2, c.TextEncoder2, null, null,
            c.Transformer.Config.JointAttentionDim);
        using var _ = inference_mode();
        using var withT5 = c.CreatePromptEncoder().Encode(new StableDiffusion3Request { Prompt = "x", MaxSequenceLength = 40 }, true, CPU);
        using var without = encoder.Encode(new StableDiffusion3Request { Prompt = "x", MaxSequenceLength = 40 }, true, CPU);
        Assert.Equal(new long[] { 1, 117, 96 }, without.PromptEmbeds.shape);
        Assert.Equal(0, without.PromptEmbeds[.., 77..].abs().sum().item<float>());
        Assert.True(without.PromptEmbeds[.., ..77].equal(withT5.PromptEmbeds[.., ..77]).all().item<bool>());
        Assert.NotEqual(0, withT5.PromptEmbeds[.., 77..].abs().sum().item<float>());
    }

    [Fact]
    public void ClipSkipTakesAnEarlierHiddenStateForThePositivePromptOnly()
    {
        var c = TinySd3Pipeline.Shared;
        using var _ = inference_mode();
        var encoder = c.CreatePromptEncoder();
        using var plain = encoder.Encode(new StableDiffusion3Request { Prompt = "a cat", MaxSequenceLength = 8 }, true, CPU);
        using var skipped = encoder.Encode(new StableDiffusion3Request { Prompt = "a cat", MaxSequenceLength = 8, ClipSkip = 1 }, true, CPU);
        using var ids = tensor(c.Tokenizer!.Encode("a cat", 77).Ids.Select(i => (long)i).ToArray(), [1, 77]);
        using var output = c.TextEncoder!.Forward(ids);
        // CLIP-L occupies the first hidden_size channels; clip_skip 1 -> hidden_states[-3].
        int h = (int)output.HiddenStates[0].shape[^1];
        TensorAssert.Close(skipped.PromptEmbeds[.., ..77, ..h], output.HiddenStates[^3], 1e-6);
        Assert.False(skipped.PromptEmbeds.equal(plain.PromptEmbeds).all().item<bool>());
        Assert.True(skipped.NegativePromptEmbeds!.equal(plain.NegativePromptEmbeds!).all().item<bool>()); // negatives ignore clip_skip
    }

    [Theory]
    [InlineData(null, "cpu", true)]
    [InlineData(null, "cuda", false)]
    [InlineData(true, "cuda", true)]
    [InlineData(false, "cpu", false)]
    public void ZeroTailCollapsesByDefaultOnTheCpuOnly(bool? setting, string device, bool expected)
    {
        var d = new Device(device == "cpu" ? DeviceType.CPU : DeviceType.CUDA, device == "cpu" ? -1 : 0);
        Assert.Equal(expected, (Small(1) with { CollapseRepeatedText = setting }).CollapsesRepeatedTextOn(d));
        Assert.Equal(expected, StableDiffusion3Request.CollapsesRepeatedText(setting, d));
    }

    [Fact]
    public void WithoutT5TheZeroTailRunsAsOneCountedRowWithTheSameResult()
    {
        using var pipe = StableDiffusion3Pipeline.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = false });
        // CFG, skip-layer guidance on steps 1 and 2, and a callback that replaces the embeddings (found again after it).
        StableDiffusion3Request Request(bool collapse) => Small(3) with
        {
            NumInferenceSteps = 3, MaxSequenceLength = 64, SkipGuidanceLayers = [1], SkipLayerGuidanceStart = 0, SkipLayerGuidanceStop = 1,
            OutputType = OutputType.Latent, CollapseRepeatedText = collapse, Generator = new Generator("cpu").ManualSeed(3),
            CallbackOnStepEnd = c => { if (c.Step == 0) c.PromptEmbeds = c.PromptEmbeds * 0.5; },
        };
        using var full = pipe.Generate(Request(false));
        using var fast = pipe.Generate(Request(true));
        double diff = TensorAssert.MaxAbsDiff(fast.Tensor!, full.Tensor!), scale = full.Tensor!.abs().max().item<float>();
        log.WriteLine($"collapsed vs full latents: max |diff| {diff:G4}, max |latent| {scale:G4}");
        // Measured 2.2e-5 on latents up to 20.6 (1.1e-6 relative): float32 rounding of a shorter softmax.
        Assert.True(diff <= 3e-6 * scale, $"collapsed vs full latents differ by {diff:G4} (max {scale:G4})");
    }

    [Fact]
    public void CallbackSeesEveryStepAndCanInterrupt()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        var seen = new List<(int Step, float Timestep)>();
        using var result = pipe.Generate(Small() with
        {
            NumInferenceSteps = 4, OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => { seen.Add((c.Step, c.Timestep)); c.Interrupt = c.Step == 1; },
        });
        Assert.Equal([0, 1], seen.Select(s => s.Step));
        Assert.Equal(1000f, seen[0].Timestep);
    }

    [Fact]
    public void CallbackCanReplaceLatentsAndDropGuidance()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        pipe.Generate(Small() with { OutputType = OutputType.Latent }).Dispose(); // warm-up: models cache small tables on first use
        long before = LiveTensors.Count();
        var guidance = new List<double>();
        using (var zeroed = pipe.Generate(Small() with
        {
            OutputType = OutputType.Latent, NumInferenceSteps = 3,
            CallbackOnStepEnd = c => { guidance.Add(c.GuidanceScale); c.Latents = zeros_like(c.Latents); c.GuidanceScale = 0; },
        }))
        {
            using var scope = NewDisposeScope();
            Assert.True(zeroed.Tensor!.isfinite().all().item<bool>());
            Assert.Equal([4.0, 0.0, 0.0], guidance);
        }
        Assert.Equal(before, LiveTensors.Count());
    }

    [Fact]
    public void CancellationStopsWithinOneStepAndFreesMemory()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        using var cts = new CancellationTokenSource();
        pipe.Generate(Small()).Dispose(); // warm-up: models cache small tables on first use
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
    public void TwentyGenerationsLeaveNoLiveTensorsAndFlatHostMemory()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        pipe.Generate(Small()).Dispose(); // warm-up: allocator pools, lazy tables
        long before = LiveTensors.Count();
        long rssBefore = Process.GetCurrentProcess().WorkingSet64;
        for (int i = 0; i < 20; i++) pipe.Generate(Small(i)).Dispose();
        Assert.Equal(before, LiveTensors.Count());
        long growth = Process.GetCurrentProcess().WorkingSet64 - rssBefore;
        Assert.True(growth < 64L << 20, $"host memory grew by {growth >> 20} MiB over 20 generations");
    }

    [Fact]
    public void Img2ImgRunsTheStrengthPartOfTheSchedule()
    {
        using var pipe = new StableDiffusion3Img2ImgPipeline(TinySd3Pipeline.Shared);
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
        var timesteps = new List<float>();
        using var result = pipe.Generate(new StableDiffusion3Img2ImgRequest
        {
            Prompt = "a dragon", Image = image, Strength = 0.7, NumInferenceSteps = 10, Height = 64, Width = 64,
            Generator = new Generator("cpu").ManualSeed(3), MaxSequenceLength = 16,
            CallbackOnStepEnd = c => timesteps.Add(c.Timestep),
        });
        Assert.Equal(7, timesteps.Count); // diffusers' get_timesteps: int(10 - 10*0.7) = 3 steps skipped
        Assert.Single(result.Images!);
        Assert.Equal(3, Strength.StartStep(10, 0.7));
        Assert.Equal(20, Strength.StartStep(50, 0.6));
        Assert.Equal(6, Strength.StartStep(10, 0.33));
        // The UNet pipelines' get_timesteps truncates first: 10 x 0.75 keeps int(7.5) = 7 steps (start 3); SD3 / Flux start at int(2.5) = 2.
        Assert.Equal(2, Strength.StartStep(10, 0.75));
        Assert.Equal(3, Strength.UNetStartStep(10, 0.75, schedulerOrder: 1));
        Assert.Equal(14, Strength.UNetStartStep(10, 0.33, schedulerOrder: 2)); // int(3.3) = 3 kept, start (10 - 3) x order 2
    }

    [Fact]
    public void FromPipeSharesComponentsAndTheLastPipelineFreesThem()
    {
        var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions());
        var t2i = new StableDiffusion3Pipeline(components);
        components.Dispose(); // the creator's reference; the pipeline keeps them alive
        var inpaint = StableDiffusion3InpaintPipeline.FromPipe(t2i);
        Assert.Same(t2i.Components, inpaint.Components);
        t2i.Dispose();
        using (var r = inpaint.Generate(new StableDiffusion3InpaintRequest
        {
            Prompt = "x", Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")),
            MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")), Height = 32, Width = 32, NumInferenceSteps = 2,
            MaxSequenceLength = 8, OutputType = OutputType.Latent,
        })) Assert.Equal(new long[] { 1, 16, 4, 4 }, r.Tensor!.shape);
        inpaint.Dispose();
        Assert.Throws<ObjectDisposedException>(() => new StableDiffusion3Pipeline(components));
    }

    [Theory]
    [InlineData(30, 32, "multiples of 16")]
    [InlineData(32, 0, "multiples of 16")]
    [InlineData(528, 32, "position table covers at most 512 pixels a side (pos_embed_max_size 32); try 512x32")]
    [InlineData(64, 1024, "try 64x512")]
    public void InvalidSizesAreRejectedBeforeCompute(int height, int width, string message)
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        var e = Assert.Throws<ArgumentException>(() => pipe.Generate(Small() with { Height = height, Width = width }));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void InvalidParametersAreRejectedBeforeCompute()
    {
        using var pipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        Assert.Contains("at least 1", Assert.Throws<ArgumentException>(() => pipe.Generate(Small() with { NumInferenceSteps = 0 })).Message);
        Assert.Contains("finite", Assert.Throws<ArgumentException>(() => pipe.Generate(Small() with { GuidanceScale = double.NaN })).Message);
        Assert.Contains("[1, 512]", Assert.Throws<ArgumentException>(() => pipe.Generate(Small() with { MaxSequenceLength = 513 })).Message);
        using var embeds = zeros(1, 93, 96);
        Assert.Contains("not both", Assert.Throws<ArgumentException>(() => pipe.Generate(Small() with { PromptEmbeds = embeds })).Message);
        Assert.Contains("pooled", Assert.Throws<ArgumentException>(() => pipe.Generate(Small() with { Prompt = null, PromptEmbeds = embeds })).Message);
        using var i2i = StableDiffusion3Img2ImgPipeline.FromPipe(pipe);
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
        Assert.Contains("strength", Assert.Throws<ArgumentException>(() => i2i.Generate(new StableDiffusion3Img2ImgRequest { Prompt = "x", Image = image, Strength = 1.5 })).Message);
        Assert.Contains("leaves 0 steps", Assert.Throws<ArgumentException>(() => i2i.Generate(new StableDiffusion3Img2ImgRequest { Prompt = "x", Image = image, Strength = 0.0, NumInferenceSteps = 10, Height = 32, Width = 32 })).Message);
        using var inpaint = StableDiffusion3InpaintPipeline.FromPipe(pipe);
        Assert.Contains("mask_image", Assert.Throws<ArgumentException>(() => inpaint.Generate(new StableDiffusion3InpaintRequest { Prompt = "x", Image = image })).Message);
    }
}
