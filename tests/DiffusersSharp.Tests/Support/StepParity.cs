using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// One UNet-pipeline case against a local-diffusers fixture, as its script recorded it: the call run twice from the same
/// seed, once for the latents (every step's timestep exactly, every step's latents, the final latents) and once for the
/// decoded image (where the fixture has one), each within <c>tolerance x max(1, max |expected|)</c>.
/// </summary>
public static class StepParity
{
    /// <summary>
    /// Checks case <paramref name="name"/> of <paramref name="expected"/>; <paramref name="onStep"/> also sees each step
    /// of the latent run (e.g. to capture time ids). Writes the measured errors to <paramref name="output"/>.
    /// </summary>
    public static void Check<T>(ITestOutputHelper output, IReadOnlyDictionary<string, Tensor> expected, double tolerance, string name, T request,
        long seed, Func<T, StableDiffusionPipelineOutput> generate, Action<StepEndContext>? onStep = null) where T : StableDiffusionRequest
    {
        var steps = new List<(float Timestep, Tensor Latents)>();
        using var latents = generate(request with
        {
            Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c =>
            {
                steps.Add((c.Timestep, c.Latents.clone().DetachFromDisposeScope()));
                onStep?.Invoke(c);
            },
        });
        int expectedSteps = expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal) && k.EndsWith(".latents", StringComparison.Ordinal));
        Assert.Equal(expectedSteps, steps.Count);
        double worstStep = 0;
        for (int i = 0; i < steps.Count; i++)
        {
            Assert.Equal(expected[$"{name}.step{i}.timestep"].item<float>(), steps[i].Timestep);
            worstStep = Math.Max(worstStep, TensorAssert.Close(steps[i].Latents, expected[$"{name}.step{i}.latents"], tolerance, $"{name} step {i}"));
            steps[i].Latents.Dispose();
        }
        double latentError = TensorAssert.Close(latents.Tensor!, expected[$"{name}.latents"], tolerance, $"{name} latents");
        if (!expected.ContainsKey($"{name}.image"))
        {
            output.WriteLine($"{name}: {steps.Count} steps, worst step latents {worstStep:G3}, final latents {latentError:G3} (no image recorded)");
            return;
        }
        using var image = generate(request with { Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Numpy });
        double imageError = TensorAssert.Close(image.Tensor!, expected[$"{name}.image"], tolerance, $"{name} image");
        output.WriteLine($"{name}: {steps.Count} steps, worst step latents {worstStep:G3}, final latents {latentError:G3} " +
                         $"(max |latents| {expected[$"{name}.latents"].abs().max().item<float>():G3}), image {imageError:G3}");
    }
}
