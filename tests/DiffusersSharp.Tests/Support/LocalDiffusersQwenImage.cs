using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.QwenImage;
using DiffusersSharp.Schedulers;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// The tiny Qwen-Image pipeline of fixture local-diffusers/qwenimage as tools/reference/qwenimage.py assembled it for
/// diffusers: its transformer, VAE and scheduler config, no text encoder (prompt embeddings are given).
/// </summary>
public static class LocalDiffusersQwenImage
{
    /// <summary>The fixture folder.</summary>
    public static string Folder => Fixtures.Path("local-diffusers/qwenimage");

    /// <summary>Loads the components, float32 on the CPU.</summary>
    public static QwenImageComponents Components() => new()
    {
        Transformer = QwenImageTransformer2DModel.FromPretrained(Path.Combine(Folder, "transformer")),
        Vae = AutoencoderKLQwenImage.FromPretrained(Path.Combine(Folder, "vae")),
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Folder, "scheduler", "scheduler_config.json")),
        Device = CPU, Dtype = ScalarType.Float32,
    };

    /// <summary>
    /// Checks one case of <paramref name="expected"/> as the script recorded it: the call run twice from the same seed,
    /// once for the packed latents (every step's, through the step callback, and the final ones), once for the decoded
    /// image, each within <c>tolerance × max(1, max |expected|)</c>. Writes the measured errors to <paramref name="output"/>.
    /// </summary>
    public static void CheckCase<T>(ITestOutputHelper output, IReadOnlyDictionary<string, Tensor> expected, double tolerance,
        Func<T, QwenImageOutput> generate, T request, string name, long seed) where T : QwenImageRequest
    {
        double Close(Tensor actual, string key) => TensorAssert.Close(actual, expected[key], tolerance, key);
        int steps = 0;
        double worstStep = 0;
        double latentError, imageError;
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
