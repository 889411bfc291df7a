using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// A Flux (or Chroma) pipeline run against a fixture case as the reference scripts record it: once with output_type "latent" (every
/// step's packed latents <c>NAME.stepK.latents</c> through the step callback, then <c>NAME.latents</c>), once with
/// "np" (<c>NAME.image</c>), each from a fresh <c>torch.Generator("cpu").manual_seed(seed)</c>.
/// </summary>
public static class FluxParity
{
    /// <summary>
    /// Runs <paramref name="request"/> both ways through <paramref name="generate"/> and checks every recorded tensor within
    /// <paramref name="tolerance"/> x max(1, max |expected|); the step count must be the fixture's. Returns the worst error.
    /// </summary>
    public static double Check<T>(Func<T, FluxOutput> generate, T request, IReadOnlyDictionary<string, Tensor> expected, string name,
        long seed, double tolerance, ITestOutputHelper output) where T : FluxRequest =>
        Check((generator, outputType, callback) =>
        {
            var result = generate(request with { Generator = generator, OutputType = outputType, CallbackOnStepEnd = callback });
            return (result.Tensor!, result);
        }, expected, name, seed, tolerance, output);

    /// <summary>
    /// The same for any pipeline of packed latents (Flux's, Chroma's): <paramref name="run"/> makes the call with the
    /// given generator, output type and step callback, and returns the output tensor and what owns it.
    /// </summary>
    public static double Check(Func<Generator, OutputType, Action<StepEndContext>?, (Tensor Tensor, IDisposable Owner)> run,
        IReadOnlyDictionary<string, Tensor> expected, string name, long seed, double tolerance, ITestOutputHelper output)
    {
        double worstStep = 0;
        int steps = 0;
        double latentError;
        var (latents, latentsOwner) = run(new Generator("cpu").ManualSeed(seed), OutputType.Latent, c =>
        {
            worstStep = Math.Max(worstStep, TensorAssert.Close(c.Latents, expected[$"{name}.step{c.Step}.latents"], tolerance, $"{name} step {c.Step}"));
            steps++;
        });
        using (latentsOwner)
            latentError = TensorAssert.Close(latents, expected[$"{name}.latents"], tolerance, $"{name} latents");
        Assert.Equal(expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        var (image, imageOwner) = run(new Generator("cpu").ManualSeed(seed), OutputType.Numpy, null);
        double imageError;
        using (imageOwner)
            imageError = TensorAssert.Close(image, expected[$"{name}.image"], tolerance, $"{name} image");
        output.WriteLine($"{name}: {steps} steps, worst step latents {worstStep:G3}, final latents {latentError:G3} " +
                         $"(max |latents| {expected[$"{name}.latents"].abs().max().item<float>():G3}), image {imageError:G3}");
        return Math.Max(Math.Max(worstStep, latentError), imageError);
    }
}
