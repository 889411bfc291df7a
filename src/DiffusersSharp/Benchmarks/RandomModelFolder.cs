using System.Diagnostics;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Runtime;
using DiffusersSharp.Training;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Benchmarks;

/// <summary>What <see cref="RandomModelFolder.Write"/> wrote.</summary>
/// <param name="Folder">The pipeline folder.</param>
/// <param name="PromptEmbeds">The prompt-embeddings file (<c>generate --prompt-embeds</c>).</param>
/// <param name="Bytes">Bytes written, every file together.</param>
/// <param name="Seconds">Time from the first random draw to the last file closed.</param>
/// <param name="Parameters">Parameters per component.</param>
public sealed record SavedModelReport(string Folder, string PromptEmbeds, long Bytes, double Seconds, IReadOnlyDictionary<string, long> Parameters);

/// <summary>
/// Writes an SD3 pipeline with random weights (std 0.02) to local disk, as diffusers' cold-start reference saves its
/// random SD3.5-Medium (docs/gpu-checks.md, "Next call"): transformer, VAE and scheduler in the diffusers layout, no text
/// encoders (model_index.json leaves them out, so the folder takes prompt embeddings only), and beside them
/// <see cref="PromptEmbedsFile"/> with random prompt embeddings of 77 + max_sequence_length rows (and the same as
/// negatives). <c>generate --model FOLDER --prompt-embeds FOLDER/random_prompt_embeds.safetensors</c> then measures the
/// cold start from local disk in a fresh process.
/// </summary>
public static class RandomModelFolder
{
    /// <summary>The prompt-embeddings file's name inside the folder.</summary>
    public const string PromptEmbedsFile = "random_prompt_embeds.safetensors";

    /// <summary>
    /// Builds each model of <paramref name="configs"/> with random weights on <paramref name="device"/> in
    /// <paramref name="dtype"/>, writes it and frees it, one at a time. Existing files are replaced, each atomically.
    /// </summary>
    /// <param name="folder">The pipeline folder to write (created if missing).</param>
    /// <param name="configs">The pipeline's configs (a preset such as <see cref="PipelineConfigs.StableDiffusion35Medium"/>).</param>
    /// <param name="device">Where the weights are drawn (then copied to the host to be written).</param>
    /// <param name="dtype">The weights' and embeddings' element type.</param>
    /// <param name="maxSequenceLength">T5 rows of the prompt embeddings (77 CLIP rows come before them).</param>
    /// <param name="seed">Seeds the prompt embeddings' generator (the weights are drawn as the bench draws them).</param>
    /// <param name="log">Progress lines.</param>
    /// <param name="cancellationToken">Checked between the models.</param>
    /// <exception cref="ArgumentException">An empty folder path or a non-floating dtype.</exception>
    public static SavedModelReport Write(string folder, PipelineConfigs configs, Device device, ScalarType dtype, int maxSequenceLength,
        long seed = 0, Action<string>? log = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentNullException.ThrowIfNull(configs);
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64))
            throw new ArgumentException($"Weights need a floating dtype, got {dtype}.", nameof(dtype));
        if (maxSequenceLength is < 1 or > 512) throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength, "max_sequence_length must be in [1, 512].");
        log ??= _ => { };
        var clock = Stopwatch.StartNew();
        var parameters = new Dictionary<string, long>();
        Directory.CreateDirectory(folder);
        using (var generator = new Generator(device).ManualSeed(seed))
        {
            log($"transformer: {configs.Name}, random on {device} ({TorchDtypes.Name(dtype)})");
            using (var transformer = RandomWeights.Build((d, t) => new SD3Transformer2DModel(configs.Transformer, d, t), device, dtype))
            {
                parameters["transformer"] = RandomWeights.CountParameters(transformer);
                ModelFolderWriter.WriteTransformer(Path.Combine(folder, "transformer"), transformer, dtype);
            }
            cancellationToken.ThrowIfCancellationRequested();
            log("vae");
            using (var vae = RandomWeights.Build((d, t) => new AutoencoderKL(configs.Vae, d, t), device, dtype))
            {
                parameters["vae"] = RandomWeights.CountParameters(vae);
                ModelFolderWriter.WriteVae(Path.Combine(folder, "vae"), vae, configs.Vae, dtype);
            }
            ModelFolderWriter.WriteScheduler(Path.Combine(folder, "scheduler"), configs.Scheduler);
            ModelFolderWriter.WriteModelIndex(folder, clip: false);

            using var scope = NewDisposeScope();
            var embeds = RandomWeights.Randn(generator, [1, 77 + maxSequenceLength, configs.Transformer.JointAttentionDim], dtype, device).cpu();
            var pooled = RandomWeights.Randn(generator, [1, configs.Transformer.PooledProjectionDim], dtype, device).cpu();
            SafetensorsWriter.Save(Path.Combine(folder, PromptEmbedsFile), new Dictionary<string, Tensor>
            {
                ["prompt_embeds"] = embeds, ["pooled_prompt_embeds"] = pooled,
                ["negative_prompt_embeds"] = embeds, ["negative_pooled_prompt_embeds"] = pooled,
            });
        }
        long bytes = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        return new SavedModelReport(Path.GetFullPath(folder), Path.GetFullPath(Path.Combine(folder, PromptEmbedsFile)), bytes,
            BenchmarkRun.Round(clock.Elapsed.TotalSeconds), parameters);
    }
}
