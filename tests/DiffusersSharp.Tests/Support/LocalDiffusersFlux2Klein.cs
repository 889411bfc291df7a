using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Schedulers;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// The tiny FLUX.2 [klein] pipeline of fixture local-diffusers/flux2-klein as tools/reference/flux2_klein.py assembled it
/// for diffusers: its transformer, VAE and scheduler config, no text encoder (prompt embeddings are given).
/// </summary>
public static class LocalDiffusersFlux2Klein
{
    /// <summary>The fixture folder.</summary>
    public static string Folder => Fixtures.Path("local-diffusers/flux2-klein");

    /// <summary>Loads the components, float32 on the CPU, as a distilled or a base model.</summary>
    public static Flux2KleinComponents Components(bool distilled) => new()
    {
        Transformer = Flux2Transformer2DModel.FromPretrained(Path.Combine(Folder, "transformer")),
        Vae = AutoencoderKLFlux2.FromPretrained(Path.Combine(Folder, "vae")),
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Folder, "scheduler", "scheduler_config.json")),
        IsDistilled = distilled,
        Device = CPU, Dtype = ScalarType.Float32,
    };

    /// <summary>An [H, W, 3] tensor of 8-bit values (as the fixture stores input images) as an image.</summary>
    public static ImageBuffer Pixels(Tensor hwc) =>
        new((int)hwc.shape[1], (int)hwc.shape[0], 3, hwc.to(ScalarType.Byte).contiguous().data<byte>().ToArray());

    /// <summary>
    /// Checks one case of <paramref name="expected"/> as the scripts recorded it: the call run twice from the same seed,
    /// once for the latents (every step's packed ones through the step callback, and the final de-normalised ones), once
    /// for the decoded image, each within <c>tolerance × max(1, max |expected|)</c>. Writes the measured errors to
    /// <paramref name="output"/>.
    /// </summary>
    public static void CheckCase<T>(ITestOutputHelper output, IReadOnlyDictionary<string, Tensor> expected, double tolerance,
        Func<T, Flux2Output> generate, T request, string name, long seed) where T : Flux2KleinRequest
    {
        double Close(Tensor actual, string key) => TensorAssert.Close(actual, expected[key], tolerance, key);
        int steps = 0;
        double worstStep = 0, latentError, imageError;
        using (var latents = generate(request with
        {
            Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c =>
            {
                worstStep = Math.Max(worstStep, Close(c.Latents, $"{name}.step{c.Step}.latents"));
                steps++;
            },
        }))
            latentError = Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        using (var image = generate(request with { Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Numpy }))
            imageError = Close(image.Tensor!, $"{name}.image");
        output.WriteLine($"{name}: worst step latents {worstStep:G3}, final latents {latentError:G3}, image {imageError:G3}");
    }
}
