using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Schedulers;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// The tiny Z-Image pipeline of fixture local-diffusers/z-image as tools/reference/z_image.py assembled it for diffusers:
/// that fixture's transformer and scheduler config (Z-Image-Turbo's, or the dynamic-shifting one), tiny-sd3's VAE, no
/// text encoder (prompt embeddings are given).
/// </summary>
public static class LocalDiffusersZImage
{
    /// <summary>Loads the components, float32 on the CPU; <paramref name="scheduler"/> names the fixture's scheduler folder.</summary>
    public static ZImageComponents Components(string scheduler = "scheduler") => new()
    {
        Transformer = ZImageTransformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/z-image/transformer")),
        Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd3/model/vae")),
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Fixtures.Path($"local-diffusers/z-image/{scheduler}/scheduler_config.json")),
        Device = CPU, Dtype = ScalarType.Float32,
    };

    /// <summary>Writes a Z-Image pipeline folder in the diffusers layout to <paramref name="dir"/>: that transformer and
    /// scheduler, tiny-sd3's VAE, and a model_index.json naming <c>ZImagePipeline</c> with Z-Image-Turbo's text encoder and
    /// tokenizer classes, whose folders hold only configs (Qwen3-4B's width, not this transformer's cap_feat_dim 48): a
    /// folder to load with <see cref="PipelineLoadOptions.LoadTextEncoders"/> false, as a download without them leaves it.
    /// The whole tiny pipeline, text encoder included, is <see cref="TinyZImagePipelineFolder"/>.</summary>
    public static void WriteFolder(string dir)
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(dir, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(dir, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("local-diffusers/z-image/transformer", "transformer");
        Copy("local-diffusers/z-image/scheduler", "scheduler");
        Copy("tiny-sd3/model/vae", "vae");
        Directory.CreateDirectory(Path.Combine(dir, "text_encoder"));
        File.WriteAllText(Path.Combine(dir, "text_encoder", "config.json"), """{"architectures": ["Qwen3Model"], "hidden_size": 2560, "model_type": "qwen3"}""");
        Directory.CreateDirectory(Path.Combine(dir, "tokenizer"));
        File.WriteAllText(Path.Combine(dir, "tokenizer", "tokenizer_config.json"), """{"tokenizer_class": "Qwen2Tokenizer"}""");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {"_class_name": "ZImagePipeline", "_diffusers_version": "0.36.0",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3Model"],
             "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "ZImageTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
            """);
    }

    /// <summary>
    /// Checks one Z-Image case of <paramref name="expected"/> as the reference scripts recorded it: the call run twice from
    /// the same seed, once for the latents (every step's, through the step callback, and the final ones), once for the
    /// decoded image, each within <c>tolerance × max(1, max |expected|)</c>. Writes the measured errors to <paramref name="output"/>.
    /// </summary>
    public static void CheckCase<T>(ITestOutputHelper output, IReadOnlyDictionary<string, Tensor> expected, double tolerance,
        Func<T, ZImageOutput> generate, T request, string name, long seed) where T : ZImageRequest
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
        output.WriteLine($"{name}: {steps} steps, worst step latents {worstStep:G3}, final latents {latentError:G3} " +
                         $"(max |latents| {expected[$"{name}.latents"].abs().max().item<float>():G3}), image {imageError:G3}");
    }
}
