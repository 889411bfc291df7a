using DiffusersSharp.Pipelines;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// One pipeline case against a local-diffusers fixture whose keys are <c>CASE/stepK</c>, <c>CASE/latents</c>,
/// <c>CASE/images</c> (and <c>CASE/timesteps</c> where the script recorded them), run as the scripts run it: twice from
/// the same seed, once for the latents (every step's through the step callback, the final ones) and once for the decoded
/// image ([0, 1], output_type "pt"), each within <c>tolerance × max(1, max |expected|)</c>; and the bfloat16 check of a
/// case recorded in bfloat16 beside its float32 twin.
/// </summary>
public static class PipelineRunParity
{
    /// <summary>
    /// Checks case <paramref name="name"/>: <paramref name="run"/> generates with the given generator, output type and step
    /// callback; <paramref name="tensorOf"/> reads the result's tensor. The image's bound may be wider
    /// (<paramref name="imageTolerance"/>) where the caller says why.
    /// </summary>
    public static void Check<TOut>(ITestOutputHelper output, IReadOnlyDictionary<string, Tensor> expected, string name, long seed,
        Func<Generator, OutputType, Action<StepEndContext>?, TOut> run, Func<TOut, Tensor> tensorOf, double tolerance = 1e-5,
        double? imageTolerance = null) where TOut : IDisposable
    {
        double Close(Tensor actual, string key, double bound) => TensorAssert.Close(actual, expected[key], bound, key);
        var timesteps = new List<float>();
        double worstStep = 0, latentError, imageError;
        using (var latents = run(new Generator("cpu").ManualSeed(seed), OutputType.Latent, c =>
               {
                   worstStep = Math.Max(worstStep, Close(c.Latents, $"{name}/step{c.Step}", tolerance));
                   timesteps.Add(c.Timestep);
               }))
            latentError = Close(tensorOf(latents), $"{name}/latents", tolerance);
        Assert.Equal(expected.Keys.Count(k => k.StartsWith($"{name}/step", StringComparison.Ordinal)), timesteps.Count);
        if (expected.TryGetValue($"{name}/timesteps", out var recorded))
            Assert.Equal(recorded.data<float>().ToArray(), timesteps);
        using (var image = run(new Generator("cpu").ManualSeed(seed), OutputType.Tensor, null))
            imageError = Close(tensorOf(image), $"{name}/images", imageTolerance ?? tolerance);
        output.WriteLine($"{name}: {timesteps.Count} steps, worst step {worstStep:G3}, latents {latentError:G3}, images {imageError:G3} (max abs)");
    }

    /// <summary>
    /// The bfloat16 case of a fixture that recorded diffusers' bfloat16 run (<c>bf16/latents</c>, <c>bf16/images</c>, and
    /// the bfloat16 noise it drew: <c>bf16/noise</c>) beside its float32 twin started from that noise (<c>bf16_ref/…</c>):
    /// the noise <paramref name="seed"/> draws in bfloat16 must be torch's exactly, the latents stay bfloat16, and ours must
    /// be no further than twice diffusers' own bfloat16 error from the float32 twin (latents and image). A pipeline that
    /// draws its noise in another dtype whatever the model's (CogView4: float32) says so with <paramref name="noiseDtype"/>.
    /// </summary>
    public static void Bfloat16BesideDiffusers<TOut>(ITestOutputHelper output, IReadOnlyDictionary<string, Tensor> expected, long seed,
        Func<Generator, OutputType, TOut> run, Func<TOut, Tensor> tensorOf, ScalarType noiseDtype = ScalarType.BFloat16) where TOut : IDisposable
    {
        var drawn = expected["bf16/noise"];
        Assert.Equal(noiseDtype, drawn.dtype);
        using (var noise = new Generator("cpu").ManualSeed(seed).Randn(drawn.shape, noiseDtype, CPU))
            Assert.True(noise.equal(drawn).all().item<bool>(), $"the {noiseDtype} noise is not torch's draw");
        using var latents = run(new Generator("cpu").ManualSeed(seed), OutputType.Latent);
        var ourLatents = tensorOf(latents);
        Assert.Equal(ScalarType.BFloat16, ourLatents.dtype);
        double Relative(Tensor a, string key) => TensorAssert.RelativeL2(a.to(ScalarType.Float32), expected[key].to(ScalarType.Float32));
        double ours = Relative(ourLatents, "bf16_ref/latents"), theirs = Relative(expected["bf16/latents"], "bf16_ref/latents");
        double toTheirs = Relative(ourLatents, "bf16/latents");
        using var image = run(new Generator("cpu").ManualSeed(seed), OutputType.Tensor);
        double imageOurs = Relative(tensorOf(image), "bf16_ref/images"), imageTheirs = Relative(expected["bf16/images"], "bf16_ref/images");
        output.WriteLine($"bfloat16 final latents relative L2 from diffusers' float32 (same noise): ours {ours:G3}, diffusers' own bfloat16 {theirs:G3}; " +
                         $"ours from diffusers' bfloat16 {toTheirs:G3}; images: ours {imageOurs:G3}, diffusers' {imageTheirs:G3}");
        Assert.True(ours < 2 * Math.Max(theirs, 0.005), $"bfloat16 latents are {ours:G3} (relative L2) from float32, diffusers' bfloat16 {theirs:G3}");
        Assert.True(imageOurs < 2 * Math.Max(imageTheirs, 0.005), $"bfloat16 image is {imageOurs:G3} (relative L2) from float32, diffusers' {imageTheirs:G3}");
    }
}
