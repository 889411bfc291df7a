using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Flux image-to-image and inpainting on the tiny random Flux model. No diffusers fixture exists for Flux: what is checked
/// is diffusers' arithmetic written out independently here (get_timesteps with strength, the shifted sigmas, the VAE
/// posterior and noise drawn in diffusers' order, scale_noise, the mask blend after each step).
/// </summary>
public sealed class FluxImg2ImgInpaintTests(TinyFluxPipeline tiny) : IClassFixture<TinyFluxPipeline>
{
    private const int Height = 32, Width = 48, LatentH = 4, LatentW = 6;

    private static readonly ImageBuffer Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));

    private static FluxImg2ImgRequest I2I(long seed = 1, double strength = 0.6, int steps = 10) => new()
    {
        Prompt = "a red circle", Image = Image, Strength = strength, NumInferenceSteps = steps, Height = Height, Width = Width,
        Generator = new Generator("cpu").ManualSeed(seed), MaxSequenceLength = 16, OutputType = OutputType.Latent,
    };

    private static FluxInpaintRequest Inpaint(PipelineImage mask, long seed = 1, double strength = 0.6, int steps = 10) => new()
    {
        Prompt = "a red circle", Image = Image, MaskImage = mask, Strength = strength, NumInferenceSteps = steps, Height = Height,
        Width = Width, Generator = new Generator("cpu").ManualSeed(seed), MaxSequenceLength = 16, OutputType = OutputType.Latent,
    };

    /// <summary>
    /// A grayscale mask at the request's size, white (repaint) where <paramref name="repaint"/> says for its 8×8 block, i.e.
    /// per latent pixel: it varies inside the 2×2 latent patches of a packed token, so a wrong mask packing shows.
    /// </summary>
    private static ImageBuffer BlockMask(Func<int, int, bool> repaint)
    {
        var pixels = new byte[Width * Height];
        for (int y = 0; y < Height; y++)
            for (int x = 0; x < Width; x++)
                pixels[y * Width + x] = repaint(y / 8, x / 8) ? (byte)255 : (byte)0;
        return new ImageBuffer(Width, Height, 1, pixels);
    }

    /// <summary>Latent pixel (row, column) repainted by the test mask: asymmetric, and mixed within 2×2 patches.</summary>
    private static bool Repaint(int row, int col) => (col + 2 * row) % 3 == 0 || (row == 3 && col >= 4);

    /// <summary>diffusers' get_timesteps: the first kept step index, int(max(N - min(N * strength, N), 0)).</summary>
    private static int StartStep(int steps, double strength) => (int)Math.Max(steps - Math.Min(steps * strength, steps), 0);

    /// <summary>
    /// The tiny scheduler's sigma at step <paramref name="index"/> of <paramref name="steps"/> (0 past the end), float64:
    /// linspace(1, 1/N, N) under the exponential time shift with mu = calculate_shift(tokens, 256, 4096, 0.5, 1.15).
    /// </summary>
    private static double Sigma(int index, int steps)
    {
        if (index >= steps) return 0;
        int tokens = (Height / 16) * (Width / 16);
        double m = (1.15 - 0.5) / (4096 - 256), mu = tokens * m + (0.5 - m * 256);
        double s = steps == 1 ? 1.0 : 1.0 + index * (1.0 / steps - 1.0) / (steps - 1);
        return Math.Exp(mu) / (Math.Exp(mu) + (1 / s - 1));
    }

    /// <summary>
    /// diffusers' draws from a generator seeded <paramref name="seed"/>, made here: the VAE posterior sample of the image
    /// (mean + std · randn), shifted and scaled, then the noise (or, <paramref name="noiseFirst"/>, the wrong order).
    /// Unpacked [1, 16, 4, 6] each.
    /// </summary>
    private (Tensor ImageLatents, Tensor Noise) Draws(long seed, bool noiseFirst = false)
    {
        using var pipe = new FluxImg2ImgPipeline(tiny.Components);
        using var generator = new Generator("cpu").ManualSeed(seed);
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var vae = tiny.Components.Vae;
        var pixels = pipe.ImageProcessor.Preprocess(Image, Height, Width);
        using var dist = vae.Encode(pixels);
        var early = noiseFirst ? generator.Randn([1, 16, LatentH, LatentW], ScalarType.Float32, CPU) : null;
        var posterior = dist.Mean + dist.Std * generator.Randn(dist.Mean.shape, ScalarType.Float32, CPU);
        var imageLatents = (posterior - vae.Config.ShiftFactor!.Value) * vae.Config.ScalingFactor;
        var noise = early ?? generator.Randn([1, 16, LatentH, LatentW], ScalarType.Float32, CPU);
        return (imageLatents.MoveToOuterDisposeScope(), noise.MoveToOuterDisposeScope());
    }

    /// <summary>diffusers' scale_noise at <paramref name="sigma"/>, packed.</summary>
    private static Tensor PackedScaleNoise(Tensor imageLatents, Tensor noise, double sigma)
    {
        using var scope = NewDisposeScope();
        var x = (float)sigma * noise + (1 - (float)sigma) * imageLatents;
        return FluxPipeline.PackLatents(x).MoveToOuterDisposeScope();
    }

    private static Tensor Keep(List<Tensor> list, StepEndContext c)
    {
        var copy = c.Latents.clone().DetachFromDisposeScope();
        list.Add(copy);
        return copy;
    }

    [Fact]
    public void DefaultsAreDiffusers()
    {
        Assert.Equal(3.5, new FluxRequest().GuidanceScale);
        Assert.Equal(7.0, new FluxImg2ImgRequest().GuidanceScale);
        Assert.Equal(7.0, new FluxInpaintRequest().GuidanceScale);
        Assert.Equal(0.6, new FluxImg2ImgRequest().Strength);
        Assert.Equal(0.6, new FluxInpaintRequest().Strength);
        Assert.Equal(28, FluxImg2ImgPipeline.DefaultSteps);
        Assert.Equal(512, new FluxInpaintRequest().MaxSequenceLength);
    }

    [Theory]
    [InlineData(false, 10, 0.6, 6)]
    [InlineData(false, 10, 0.33, 4)]
    [InlineData(false, 7, 0.5, 4)]
    [InlineData(false, 10, 1.0, 10)]
    [InlineData(false, 28, 0.6, 17)]
    [InlineData(true, 10, 0.6, 6)]
    [InlineData(true, 4, 0.3, 2)]
    [InlineData(true, 5, 1.0, 5)]
    public void StrengthRunsTheTailOfTheScheduleAtDiffusersTimesteps(bool inpaint, int steps, double strength, int expectedRun)
    {
        int start = StartStep(steps, strength);
        Assert.Equal(expectedRun, steps - start);
        var seen = new List<float>();
        void Record(StepEndContext c)
        {
            Assert.Equal(expectedRun, c.TotalSteps);
            seen.Add(c.Timestep);
        }
        if (inpaint)
        {
            using var pipe = new FluxInpaintPipeline(tiny.Components);
            using var _ = pipe.Generate(Inpaint(BlockMask(Repaint), strength: strength, steps: steps) with { CallbackOnStepEnd = Record });
        }
        else
        {
            using var pipe = new FluxImg2ImgPipeline(tiny.Components);
            using var _ = pipe.Generate(I2I(strength: strength, steps: steps) with { CallbackOnStepEnd = Record });
        }
        Assert.Equal(expectedRun, seen.Count);
        for (int i = 0; i < seen.Count; i++)
        {
            double expected = Sigma(start + i, steps) * 1000;
            Assert.True(Math.Abs(seen[i] - expected) <= 1e-3, $"step {i}: timestep {seen[i]} vs diffusers' {expected}");
        }
        if (strength == 1.0) Assert.Equal(1000f, seen[0]); // the whole schedule, from pure noise
    }

    [Theory]
    [InlineData(0.6, 11)]
    [InlineData(1.0, 12)]
    [InlineData(0.35, 13)]
    public void Img2ImgStartsFromScaleNoiseOfThePosteriorSampleThenTheNoise(double strength, long seed)
    {
        // diffusers: image_latents from the posterior (draw 1), noise (draw 2), then
        // scale_noise = sigma_start * noise + (1 - sigma_start) * image_latents, packed. Starting from those latents given
        // explicitly (diffusers uses given latents as they are) must then run the same denoising.
        const int steps = 6;
        double sigma = Sigma(StartStep(steps, strength), steps);
        var (imageLatents, noise) = Draws(seed);
        using var start = PackedScaleNoise(imageLatents, noise, sigma);
        var (wrongImage, wrongNoise) = Draws(seed, noiseFirst: true);
        using var wrongStart = PackedScaleNoise(wrongImage, wrongNoise, sigma);
        using var pipe = new FluxImg2ImgPipeline(tiny.Components);
        List<Tensor> drawn = [], given = [], wrong = [];
        using var a = pipe.Generate(I2I(seed, strength, steps) with { CallbackOnStepEnd = c => Keep(drawn, c) });
        using var b = pipe.Generate(I2I(seed + 100, strength, steps) with { Image = null, Latents = start, CallbackOnStepEnd = c => Keep(given, c) });
        using var w = pipe.Generate(I2I(seed + 100, strength, steps) with { Image = null, Latents = wrongStart, CallbackOnStepEnd = c => Keep(wrong, c) });
        Assert.Equal(steps - StartStep(steps, strength), drawn.Count);
        Assert.Equal(drawn.Count, given.Count);
        TensorAssert.Close(drawn[0], given[0], 1e-5, "latents after the first step");
        TensorAssert.Close(a.Tensor!, b.Tensor!, 1e-5, "final latents");
        // The same draws in the other order start elsewhere: the check above tells them apart.
        Assert.True(TensorAssert.MaxAbsDiff(drawn[0], wrong[0]) > 1e-2);
        foreach (var t in drawn.Concat(given).Concat(wrong)) t.Dispose();
        foreach (var t in new[] { imageLatents, noise, wrongImage, wrongNoise }) t.Dispose();
    }

    /// <summary>The test mask at latent size over the 16 channels: 1 where repainted.</summary>
    private static Tensor RepaintLatentMask()
    {
        var m = new float[LatentH * LatentW];
        for (int r = 0; r < LatentH; r++)
            for (int c = 0; c < LatentW; c++)
                m[r * LatentW + c] = Repaint(r, c) ? 1f : 0f;
        using var plane = tensor(m, [1, 1, LatentH, LatentW]);
        return plane.expand(1, 16, LatentH, LatentW).contiguous();
    }

    [Fact]
    public void InpaintingKeepsTheLatentsOutsideTheMaskAtTheImageLatentsNoisedToTheNextSigma()
    {
        // diffusers, after each step i: latents = (1 - mask) * scale_noise(image_latents, t[i+1], noise) + mask * latents,
        // and the clean image latents after the last step. The draws are made here (posterior, then noise).
        const int steps = 6, seed = 21;
        const double strength = 0.6;
        int start = StartStep(steps, strength);
        var (imageLatents, noise) = Draws(seed);
        using var repaint = RepaintLatentMask();
        using var keep = repaint.eq(0);
        using var change = repaint.eq(1);
        Assert.InRange(keep.sum().item<long>(), 16 * 6, 16 * 18); // both regions are non-trivial
        using var expectedMask = FluxPipeline.PackLatents(repaint);
        using var pipe = new FluxInpaintPipeline(tiny.Components);
        var seen = new List<Tensor>();
        using var result = pipe.Generate(Inpaint(BlockMask(Repaint), seed, strength, steps) with
        {
            CallbackOnStepEnd = c =>
            {
                Keep(seen, c);
                Assert.Equal(expectedMask.shape, c.Mask!.shape);
                Assert.True(c.Mask.equal(expectedMask).all().item<bool>(), "the packed mask is the latent-size mask over 16 channels, packed like the latents");
            },
        });
        Assert.Equal(steps - start, seen.Count);
        for (int i = 0; i < seen.Count; i++)
        {
            using var scope = NewDisposeScope();
            var ours = FluxPipeline.UnpackLatents(seen[i], Height, Width, 8);
            double sigma = Sigma(start + i + 1, steps);
            var proper = (float)sigma * noise + (1 - (float)sigma) * imageLatents;
            TensorAssert.Close(ours.masked_select(keep), proper.masked_select(keep), 1e-5, $"step {i} outside the mask");
            Assert.True(TensorAssert.MaxAbsDiff(ours.masked_select(change), proper.masked_select(change)) > 1e-3, $"step {i}: the masked part is repainted");
        }
        using (var final = FluxPipeline.UnpackLatents(result.Tensor!, Height, Width, 8))
            TensorAssert.Close(final.masked_select(keep), imageLatents.masked_select(keep), 1e-6, "final latents outside the mask: the clean image latents");
        foreach (var t in seen) t.Dispose();
        imageLatents.Dispose();
        noise.Dispose();
    }

    [Fact]
    public void AllWhiteMaskIsImg2ImgAndAllBlackMaskGivesBackTheImageLatents()
    {
        // Mask 1 everywhere: the blend keeps the step's latents, and inpainting draws what img2img draws (posterior, then
        // noise) before its masked-image draw, so the two pipelines agree bit for bit. Mask 0: the known region is all.
        var white = new ImageBuffer(Width, Height, 1, Enumerable.Repeat((byte)255, Width * Height).ToArray());
        var black = new ImageBuffer(Width, Height, 1, new byte[Width * Height]);
        using var inpaint = new FluxInpaintPipeline(tiny.Components);
        using var img2img = FluxImg2ImgPipeline.FromPipe(inpaint);
        using var a = inpaint.Generate(Inpaint(white, 5));
        using var b = img2img.Generate(I2I(5));
        Assert.True(a.Tensor!.equal(b.Tensor!).all().item<bool>(), "all-white inpainting equals img2img");

        var (imageLatents, noise) = Draws(5);
        using var packed = FluxPipeline.PackLatents(imageLatents);
        using var kept = inpaint.Generate(Inpaint(black, 5));
        TensorAssert.Close(kept.Tensor!, packed, 1e-6, "all-black inpainting");
        imageLatents.Dispose();
        noise.Dispose();
    }

    [Fact]
    public void GivenLatentsAreTheNoiseUnpackedOrPacked()
    {
        // diffusers' inpainting takes latents [B, 16, h, w] as the noise: no scale_noise, then packed; the image is still
        // encoded (draw 1), and the blend noises it with that noise.
        const int steps = 4, seed = 8;
        var (imageLatents, noise) = Draws(seed);
        using var packedNoise = FluxPipeline.PackLatents(noise);
        using var pipe = new FluxInpaintPipeline(tiny.Components);
        var seen = new List<Tensor>();
        using var unpacked = pipe.Generate(Inpaint(BlockMask(Repaint), seed, 1.0, steps) with { Latents = noise, CallbackOnStepEnd = c => Keep(seen, c) });
        using var packed = pipe.Generate(Inpaint(BlockMask(Repaint), seed, 1.0, steps) with { Latents = packedNoise });
        using var drawn = pipe.Generate(Inpaint(BlockMask(Repaint), seed, 1.0, steps));
        Assert.True(unpacked.Tensor!.equal(packed.Tensor!).all().item<bool>());
        // At strength 1 scale_noise(image, noise, 1) is the noise itself: drawing it or giving it is the same.
        TensorAssert.Close(drawn.Tensor!, unpacked.Tensor!, 1e-6, "drawn vs given noise at strength 1");
        using var keep = RepaintLatentMask().eq(0);
        using var step0 = FluxPipeline.UnpackLatents(seen[0], Height, Width, 8);
        double sigma = Sigma(1, steps);
        using var proper = (float)sigma * noise + (1 - (float)sigma) * imageLatents;
        TensorAssert.Close(step0.masked_select(keep), proper.masked_select(keep), 1e-5, "step 0 outside the mask with given noise");
        foreach (var t in seen) t.Dispose();
        imageLatents.Dispose();
        noise.Dispose();
    }

    [Fact]
    public void TheGeneratorIsLeftWhereDiffusersLeavesIt()
    {
        // img2img draws the posterior and the noise; inpainting also draws the masked image's posterior (unused by the
        // 64-channel loop). A generator reused for a second call must continue from there.
        using var i2iGen = new Generator("cpu").ManualSeed(3);
        using var inpaintGen = new Generator("cpu").ManualSeed(3);
        using (new FluxImg2ImgPipeline(tiny.Components).Generate(I2I(0) with { Generator = i2iGen })) { }
        using (new FluxInpaintPipeline(tiny.Components).Generate(Inpaint(BlockMask(Repaint)) with { Generator = inpaintGen })) { }
        using var reference = new Generator("cpu").ManualSeed(3);
        long[] latentShape = [1, 16, LatentH, LatentW];
        reference.Randn(latentShape, ScalarType.Float32, CPU).Dispose();
        reference.Randn(latentShape, ScalarType.Float32, CPU).Dispose();
        using var afterTwo = reference.Randn([8], ScalarType.Float32, CPU);
        using var i2iNext = i2iGen.Randn([8], ScalarType.Float32, CPU);
        Assert.True(i2iNext.equal(afterTwo).all().item<bool>(), "img2img: two draws");
        using var reference3 = new Generator("cpu").ManualSeed(3);
        for (int i = 0; i < 3; i++) reference3.Randn(latentShape, ScalarType.Float32, CPU).Dispose();
        using var afterThree = reference3.Randn([8], ScalarType.Float32, CPU);
        using var inpaintNext = inpaintGen.Randn([8], ScalarType.Float32, CPU);
        Assert.True(inpaintNext.equal(afterThree).all().item<bool>(), "inpaint: three draws");
    }

    [Fact]
    public void InvalidRequestsAreRejectedBeforeCompute()
    {
        using var i2i = new FluxImg2ImgPipeline(tiny.Components);
        using var inpaint = FluxInpaintPipeline.FromPipe(i2i);
        var mask = BlockMask(Repaint);
        void Rejects(string fragment, Action run)
        {
            var e = Assert.Throws<ArgumentException>(run);
            Assert.Contains(fragment, e.Message);
        }
        var progress = new List<PipelineProgress>();
        var record = new SyncProgress(progress.Add);
        foreach (double bad in new[] { -0.1, 1.5, double.NaN })
        {
            Rejects("strength must be in [0, 1]", () => i2i.Generate(I2I(strength: bad), record));
            Rejects("strength must be in [0, 1]", () => inpaint.Generate(Inpaint(mask, strength: bad), record));
        }
        Rejects("leaves 0 steps", () => i2i.Generate(I2I(strength: 0.0), record));
        Rejects("leaves 0 steps", () => inpaint.Generate(Inpaint(mask, strength: 0.0), record));
        Rejects("image is required", () => i2i.Generate(I2I() with { Image = null }, record));
        Rejects("image is required", () => inpaint.Generate(Inpaint(mask) with { Image = null }, record));
        Rejects("mask_image is required", () => inpaint.Generate(Inpaint(mask) with { MaskImage = null }, record));
        Rejects("multiples of 16", () => i2i.Generate(I2I() with { Height = 40 }, record));
        Rejects("multiples of 16", () => inpaint.Generate(Inpaint(mask) with { Width = 50 }, record));
        using var unpacked = zeros(1, 16, LatentH, LatentW);
        Rejects("packed", () => i2i.Generate(I2I() with { Latents = unpacked }, record));
        using var wrong = zeros(1, 5, 64);
        Rejects("latents must be", () => inpaint.Generate(Inpaint(mask) with { Latents = wrong }, record));
        using var latentImage = zeros(1, 16, 2, 2);
        Rejects("latents must be [N, 16, 4, 6]", () => i2i.Generate(I2I() with { Image = PipelineImage.FromTensor(latentImage) }, record));
        Rejects("Cannot repeat 2 images", () => i2i.Generate(I2I() with { Image = PipelineImage.FromTensor(zeros(2, 3, Height, Width)) }, record));
        Assert.Empty(progress); // nothing was encoded
    }

    [Fact]
    public void CallbacksPreviewsAndCancellationLeaveNoLiveTensors()
    {
        using var i2i = new FluxImg2ImgPipeline(tiny.Components);
        using var inpaint = FluxInpaintPipeline.FromPipe(i2i);
        var mask = BlockMask(Repaint);
        i2i.Generate(I2I()).Dispose(); // warm-up
        inpaint.Generate(Inpaint(mask)).Dispose();
        long before = LiveTensors.Count();
        int previews = 0;
        void Preview(FluxPipelineBase pipe, StepEndContext c)
        {
            var images = pipe.PreviewImages(c.Latents, Height, Width);
            Assert.Equal((Width, Height), (images[0].Width, images[0].Height));
            previews++;
        }
        i2i.Generate(I2I() with { OutputType = OutputType.Image, CallbackOnStepEnd = c => Preview(i2i, c) }).Dispose();
        inpaint.Generate(Inpaint(mask) with { OutputType = OutputType.Image, CallbackOnStepEnd = c => Preview(inpaint, c) }).Dispose();
        Assert.Equal(12, previews); // 6 steps each at strength 0.6 of 10
        using var cts = new CancellationTokenSource();
        int steps = 0;
        Assert.Throws<OperationCanceledException>(() => inpaint.Generate(Inpaint(mask) with
        {
            CallbackOnStepEnd = c => { steps++; if (c.Step == 1) cts.Cancel(); },
        }, null, cts.Token));
        Assert.Equal(2, steps);
        Assert.Equal(before, LiveTensors.Count());
    }

    [Fact]
    public void ModelOffloadGivesTheSameImages()
    {
        // The VAE encodes before the transformer runs and decodes after: under offload each comes to the device in turn.
        var mask = BlockMask(Repaint);
        using var i2i = new FluxImg2ImgPipeline(tiny.Components);
        using var inpaint = FluxInpaintPipeline.FromPipe(i2i);
        using var a = i2i.Generate(I2I(4) with { OutputType = OutputType.Tensor });
        using var b = inpaint.Generate(Inpaint(mask, 4) with { OutputType = OutputType.Tensor });
        using var offloaded = FluxInpaintPipeline.FromPretrained(tiny.Folder, new PipelineLoadOptions { Offload = OffloadMode.Model });
        var moves = new List<string>();
        offloaded.Components.ModelMoved += m => moves.Add(m.ToString());
        using var i2iOffloaded = FluxImg2ImgPipeline.FromPipe(offloaded);
        using var c = i2iOffloaded.Generate(I2I(4) with { OutputType = OutputType.Tensor });
        using var d = offloaded.Generate(Inpaint(mask, 4) with { OutputType = OutputType.Tensor });
        TensorAssert.Close(c.Tensor!, a.Tensor!, 1e-5, "offloaded img2img");
        TensorAssert.Close(d.Tensor!, b.Tensor!, 1e-5, "offloaded inpainting");
        Assert.Contains(moves, m => m.Contains("vae"));
    }

    /// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(Action<PipelineProgress> report) : IProgress<PipelineProgress>
    {
        public void Report(PipelineProgress value) => report(value);
    }
}
