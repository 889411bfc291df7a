using System.Diagnostics;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Diagnostics;

/// <summary>Input sizes of the transformer replay (defaults: the full-size fixture's, 1024x1024 with CFG).</summary>
/// <param name="Batch">Batch size.</param>
/// <param name="LatentHeight">Latent height (in latent pixels).</param>
/// <param name="LatentWidth">Latent width.</param>
/// <param name="TextTokens">Text tokens of <c>encoder_hidden_states</c> (77 CLIP + 256 T5 = 333).</param>
public sealed record TransformerReplayShape(int Batch = 2, int LatentHeight = 128, int LatentWidth = 128, int TextTokens = 333);

/// <summary>What a transformer replay produced; tensors are float32 on the CPU and owned by this object.</summary>
public sealed class TransformerReplay : IDisposable
{
    /// <summary>The state_dict keys in the order their weights were drawn.</summary>
    public required IReadOnlyList<string> DrawOrder { get; init; }
    /// <summary>The drawn <c>hidden_states</c> (after the cast to the model dtype), to check the replay of the draws.</summary>
    public required Tensor HiddenStates { get; init; }
    /// <summary>The model output (a float32 copy of the model-dtype output).</summary>
    public required Tensor Output { get; init; }
    /// <summary>Milliseconds spent drawing and placing the weights.</summary>
    public required double FillMs { get; init; }
    /// <summary>Milliseconds of the first (cold) forward.</summary>
    public required double FirstForwardMs { get; init; }
    /// <summary>Mean milliseconds per forward over the timed runs after it (null when none were asked for).</summary>
    public double? ForwardMs { get; init; }

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        HiddenStates.Dispose();
        Output.Dispose();
    }
}

/// <summary>What a VAE replay produced; tensors are float32 on the CPU and owned by this object.</summary>
public sealed class VaeReplay : IDisposable
{
    /// <summary>The state_dict keys in the order their weights were drawn.</summary>
    public required IReadOnlyList<string> DrawOrder { get; init; }
    /// <summary>The decoded image of the drawn latent.</summary>
    public required Tensor Decoded { get; init; }
    /// <summary>The posterior mean of the drawn image.</summary>
    public required Tensor LatentMean { get; init; }
    /// <summary>Milliseconds spent drawing and placing the weights.</summary>
    public required double FillMs { get; init; }
    /// <summary>Mean milliseconds per decode over the timed runs (null when none were asked for).</summary>
    public double? DecodeMs { get; init; }
    /// <summary>Mean milliseconds per encode over the timed runs (null when none were asked for).</summary>
    public double? EncodeMs { get; init; }

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        Decoded.Dispose();
        LatentMean.Dispose();
    }
}

/// <summary>The outcome of one component's full-size check.</summary>
/// <param name="Component">"transformer" or "vae".</param>
/// <param name="Keys">The number of weights drawn (diffusers drew <paramref name="ExpectedKeys"/>).</param>
/// <param name="ExpectedKeys">The number of state_dict keys in the fixture's meta.json.</param>
/// <param name="Replay">The drawn inputs against the fixture's (transformer only): must be exact, or the weights differ too.</param>
/// <param name="Outputs">Each output against diffusers'.</param>
/// <param name="Timings">Milliseconds: fill, and per forward / decode / encode after warm-up where timed.</param>
public sealed record ComponentParity(string Component, int Keys, int ExpectedKeys, TensorComparison? Replay,
    IReadOnlyList<TensorComparison> Outputs, IReadOnlyDictionary<string, double> Timings)
{
    /// <summary>
    /// Whether the replay is faithful (same key count, inputs equal) and every output's relative L2 error is at most
    /// <paramref name="maxRelativeL2"/>.
    /// </summary>
    public bool Passes(double maxRelativeL2) =>
        Keys == ExpectedKeys && (Replay is null || Replay.Exact) && Outputs.All(o => o.RelativeL2 <= maxRelativeL2);
}

/// <summary>
/// Replays the full-size fixture's procedure (fixtures README, "full-size/"): a model built on <c>meta</c>, filled by
/// <see cref="Benchmarks.RandomWeights.Fill"/> from a seeded generator, then inputs drawn from the same generator (float32, cast to
/// the model dtype) and one forward. With a CUDA <see cref="Generator"/> (the device's default generator, seeded like
/// <c>torch.cuda.manual_seed</c>) this reproduces diffusers' draws on a CUDA machine exactly; with a CPU generator the
/// same procedure runs anywhere (tests, tiny configs) but draws other numbers than the fixture's.
/// </summary>
public static class FullSizeParity
{
    /// <summary>The standard deviation of the drawn weights.</summary>
    public const double WeightStd = 0.02;

    /// <summary>The fixture's timesteps, one per batch item (σ·1000 for the first and a middle step).</summary>
    public static readonly IReadOnlyList<float> Timesteps = [999f, 500f];

    /// <summary>
    /// Builds the transformer on <c>meta</c>, fills it from <paramref name="generator"/> (seeded by the caller), draws
    /// <c>hidden_states</c> [B, in_channels, h, w], <c>encoder_hidden_states</c> [B, S, joint_attention_dim] and
    /// <c>pooled</c> [B, pooled_projection_dim] in that order, and runs one forward with timesteps 999, 500 (cycled over
    /// the batch), then <paramref name="timedRuns"/> more to time it.
    /// </summary>
    /// <exception cref="ArgumentException">The shape does not fit the config, or <paramref name="timedRuns"/> is negative.</exception>
    public static TransformerReplay ReplayTransformer(SD3Transformer2DModelConfig config, Generator generator, Device device,
        ScalarType dtype, TransformerReplayShape? shape = null, int timedRuns = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(generator);
        ArgumentOutOfRangeException.ThrowIfNegative(timedRuns);
        shape ??= new TransformerReplayShape();
        if (shape.Batch < 1 || shape.TextTokens < 1)
            throw new ArgumentException($"batch and text tokens must be positive, got {shape}.", nameof(shape));
        using var model = new SD3Transformer2DModel(config, new Device(DeviceType.META), dtype);
        // Checked before any draw, so a wrong shape costs nothing.
        int p = config.PatchSize;
        if (shape.LatentHeight < p || shape.LatentWidth < p || shape.LatentHeight % p != 0 || shape.LatentWidth % p != 0)
            throw new ArgumentException($"the latent {shape.LatentHeight}x{shape.LatentWidth} must be a positive multiple of the patch size {p}.", nameof(shape));
        if (config.PosEmbedMaxSize is int max && (shape.LatentHeight / p > max || shape.LatentWidth / p > max))
            throw new ArgumentException($"the latent {shape.LatentHeight}x{shape.LatentWidth} exceeds the position table ({max * p}x{max * p} latent pixels).", nameof(shape));
        var clock = Stopwatch.StartNew();
        var order = Benchmarks.RandomWeights.Fill(model, device, WeightStd, generator);
        Synchronize(device);
        double fillMs = clock.Elapsed.TotalMilliseconds;

        using var scope = NewDisposeScope();
        var hidden = Benchmarks.RandomWeights.Randn(generator, [shape.Batch, config.InChannels, shape.LatentHeight, shape.LatentWidth], dtype, device);
        var text = Benchmarks.RandomWeights.Randn(generator, [shape.Batch, shape.TextTokens, config.JointAttentionDim], dtype, device);
        var pooled = Benchmarks.RandomWeights.Randn(generator, [shape.Batch, config.PooledProjectionDim], dtype, device);
        var timestep = tensor(Enumerable.Range(0, shape.Batch).Select(i => Timesteps[i % Timesteps.Count]).ToArray(), device: device);

        using var inference = inference_mode();
        Tensor Forward() => model.forward(hidden, text, pooled, timestep);
        var (output, firstMs) = Timed(Forward, device);
        var output32 = output.to(ScalarType.Float32).cpu();
        output.Dispose();
        double? forwardMs = TimeRuns(Forward, device, timedRuns, cancellationToken);
        var hidden32 = hidden.to(ScalarType.Float32).cpu();
        return new TransformerReplay
        {
            DrawOrder = order,
            HiddenStates = hidden32.MoveToOuterDisposeScope(),
            Output = output32.MoveToOuterDisposeScope(),
            FillMs = fillMs,
            FirstForwardMs = firstMs,
            ForwardMs = forwardMs,
        };
    }

    /// <summary>
    /// Builds the VAE on <c>meta</c>, fills it from <paramref name="generator"/>, draws a latent [1, latent_channels, L, L]
    /// and decodes it, then draws an image [1, in_channels, 8L, 8L] and encodes it (posterior mean); then times
    /// <paramref name="timedRuns"/> more decodes and encodes.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="latentSize"/> is not positive or <paramref name="timedRuns"/> is negative.</exception>
    public static VaeReplay ReplayVae(AutoencoderKLConfig config, Generator generator, Device device, ScalarType dtype,
        int latentSize = 64, int timedRuns = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(generator);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(latentSize);
        ArgumentOutOfRangeException.ThrowIfNegative(timedRuns);
        using var model = new AutoencoderKL(config, new Device(DeviceType.META), dtype);
        var clock = Stopwatch.StartNew();
        var order = Benchmarks.RandomWeights.Fill(model, device, WeightStd, generator);
        Synchronize(device);
        double fillMs = clock.Elapsed.TotalMilliseconds;

        using var scope = NewDisposeScope();
        var z = Benchmarks.RandomWeights.Randn(generator, [1, config.LatentChannels, latentSize, latentSize], dtype, device);
        Tensor decoded;
        using (inference_mode()) decoded = model.Decode(z);
        int imageSize = latentSize * model.VaeScaleFactor;
        var x = Benchmarks.RandomWeights.Randn(generator, [1, config.InChannels, imageSize, imageSize], dtype, device);

        using var inference = inference_mode();
        Tensor Encode()
        {
            using var posterior = model.Encode(x);
            return posterior.Mean.clone();
        }
        var mean = Encode();
        var decoded32 = decoded.to(ScalarType.Float32).cpu();
        var mean32 = mean.to(ScalarType.Float32).cpu();
        decoded.Dispose();
        mean.Dispose();
        double? decodeMs = TimeRuns(() => model.Decode(z), device, timedRuns, cancellationToken);
        double? encodeMs = TimeRuns(Encode, device, timedRuns, cancellationToken);
        return new VaeReplay
        {
            DrawOrder = order,
            Decoded = decoded32.MoveToOuterDisposeScope(),
            LatentMean = mean32.MoveToOuterDisposeScope(),
            FillMs = fillMs,
            DecodeMs = decodeMs,
            EncodeMs = encodeMs,
        };
    }

    /// <summary>
    /// The transformer check on <paramref name="device"/> (CUDA for the fixture's draws): seeds the device's default
    /// generator with the fixture's seed, replays in bfloat16, compares <c>transformer.hidden_states</c> (must be equal)
    /// and <c>transformer.out</c>.
    /// </summary>
    public static ComponentParity CheckTransformer(FullSizeFixture fixture, Device device, int timedRuns = 10, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(fixture);
        using var generator = new Generator(device).ManualSeed(fixture.TransformerSeed);
        using var expectedHidden = fixture.Expected("transformer.hidden_states");
        using var expectedOut = fixture.Expected("transformer.out");
        var s = expectedHidden.shape;
        var shape = new TransformerReplayShape((int)s[0], (int)s[2], (int)s[3]);
        using var replay = ReplayTransformer(fixture.TransformerConfig, generator, device, ScalarType.BFloat16, shape, timedRuns, cancellationToken);
        var timings = new Dictionary<string, double> { ["fill"] = replay.FillMs, ["first_forward"] = replay.FirstForwardMs };
        if (replay.ForwardMs is { } f) timings["forward"] = f;
        return new ComponentParity("transformer", replay.DrawOrder.Count, fixture.TransformerKeys,
            TensorComparison.Of("transformer.hidden_states", replay.HiddenStates, expectedHidden),
            [TensorComparison.Of("transformer.out", replay.Output, expectedOut)], timings);
    }

    /// <summary>
    /// The VAE check on <paramref name="device"/>: seeds with the fixture's VAE seed, replays in bfloat16, compares
    /// <c>vae.decoded</c> and <c>vae.latent_mean</c>.
    /// </summary>
    public static ComponentParity CheckVae(FullSizeFixture fixture, Device device, int timedRuns = 10, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(fixture);
        using var generator = new Generator(device).ManualSeed(fixture.VaeSeed);
        using var expectedDecoded = fixture.Expected("vae.decoded");
        using var expectedMean = fixture.Expected("vae.latent_mean");
        int latentSize = (int)expectedMean.shape[^1];
        using var replay = ReplayVae(fixture.VaeConfig, generator, device, ScalarType.BFloat16, latentSize, timedRuns, cancellationToken);
        var timings = new Dictionary<string, double> { ["fill"] = replay.FillMs };
        if (replay.DecodeMs is { } d) timings["decode"] = d;
        if (replay.EncodeMs is { } e) timings["encode"] = e;
        return new ComponentParity("vae", replay.DrawOrder.Count, fixture.VaeKeys, null,
            [TensorComparison.Of("vae.decoded", replay.Decoded, expectedDecoded), TensorComparison.Of("vae.latent_mean", replay.LatentMean, expectedMean)],
            timings);
    }

    private static (Tensor Result, double Ms) Timed(Func<Tensor> run, Device device)
    {
        Synchronize(device);
        var clock = Stopwatch.StartNew();
        var result = run();
        Synchronize(device);
        return (result, clock.Elapsed.TotalMilliseconds);
    }

    private static double? TimeRuns(Func<Tensor> run, Device device, int runs, CancellationToken cancellationToken)
    {
        if (runs == 0) return null;
        Synchronize(device);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < runs; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            run().Dispose();
        }
        Synchronize(device);
        return clock.Elapsed.TotalMilliseconds / runs;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}
