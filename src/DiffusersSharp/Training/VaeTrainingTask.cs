using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Training.Shapes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>Options of <see cref="VaeTrainingTask"/>.</summary>
public sealed record VaeTrainingOptions
{
    /// <summary>Scenes per step.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Side the scenes are drawn at.</summary>
    public int ImageSize { get; init; } = ShapeScenes.DefaultImageSize;

    /// <summary>Side of the random square crop trained on (a multiple of the VAE scale factor; 0 or the image size: no crop).</summary>
    public int CropSize { get; init; }

    /// <summary>Weight of the KL term (per-element mean of the posterior's KL to N(0, 1)).</summary>
    public double KlWeight { get; init; } = 1e-6;

    /// <summary>Seed of the scene stream.</summary>
    public long DataSeed { get; init; }
}

/// <summary>
/// Trains an <see cref="AutoencoderKL"/> on drawn scenes: encode, sample the posterior, decode;
/// <c>loss = |x - x̂|₁ + (x - x̂)² + kl_weight · KL</c> (per-element means).
/// </summary>
public sealed class VaeTrainingTask : ITrainingTask
{
    private readonly SceneBatches _batches;
    private readonly Device _device;

    /// <summary>Builds the task over <paramref name="vae"/> (trained in place).</summary>
    /// <exception cref="ArgumentException">The crop size does not fit the VAE or the image.</exception>
    public VaeTrainingTask(AutoencoderKL vae, VaeTrainingOptions options, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentNullException.ThrowIfNull(options);
        Vae = vae;
        Options = options;
        int crop = options.CropSize == 0 ? options.ImageSize : options.CropSize;
        if (crop > options.ImageSize || crop % vae.VaeScaleFactor != 0 || options.ImageSize % vae.VaeScaleFactor != 0)
            throw new ArgumentException($"crop {crop} and image size {options.ImageSize} must be multiples of the VAE scale factor {vae.VaeScaleFactor}, crop <= image.");
        CropSize = crop;
        _device = device ?? CPU;
        _batches = new SceneBatches(options.DataSeed, options.BatchSize);
        TrainableParameters = vae.named_parameters().Where(p => p.parameter.requires_grad).Select(p => ("vae." + p.name, p.parameter)).ToArray();
    }

    /// <summary>The VAE being trained.</summary>
    public AutoencoderKL Vae { get; }

    /// <summary>The options.</summary>
    public VaeTrainingOptions Options { get; }

    /// <summary>The side trained on.</summary>
    public int CropSize { get; }

    /// <inheritdoc/>
    public string Stage => "vae";

    /// <inheritdoc/>
    public int BatchSize => Options.BatchSize;

    /// <inheritdoc/>
    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters { get; }

    /// <inheritdoc/>
    public void SetTraining(bool training) => Vae.train(training);

    /// <summary>The batch of step <paramref name="step"/> as [B, 3, crop, crop] in [-1, 1] (crop offsets from <paramref name="generator"/>).</summary>
    public Tensor Images(long step, torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        var x = SceneTensors.Draw(_batches.Batch(step), Options.ImageSize);
        if (CropSize < Options.ImageSize)
        {
            int f = Vae.VaeScaleFactor, cells = (Options.ImageSize - CropSize) / f + 1;
            var offsets = randint(cells, [x.shape[0], 2], dtype: ScalarType.Int64, generator: generator).data<long>().ToArray();
            var crops = new Tensor[x.shape[0]];
            for (int i = 0; i < crops.Length; i++)
                crops[i] = x[i].narrow(1, offsets[2 * i] * f, CropSize).narrow(2, offsets[2 * i + 1] * f, CropSize);
            x = stack(crops);
        }
        return x.to(_device).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public Tensor ComputeLoss(long step, torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        var x = Images(step, generator);
        using var posterior = Vae.Encode(x);
        var z = posterior.Sample(generator);
        var recon = Vae.Decode(z);
        var diff = recon - x;
        var kl = 0.5 * (posterior.Mean.pow(2) + posterior.Var - 1.0 - posterior.LogVar).mean();
        var loss = diff.abs().mean() + diff.pow(2).mean() + Options.KlWeight * kl;
        return loss.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public JsonObject Describe() => new()
    {
        ["vae"] = JsonSerializer.SerializeToNode(Vae.Config with { ScalingFactor = 1, ShiftFactor = 0 }, ConfigJson.Options),
        ["options"] = JsonSerializer.SerializeToNode(Options, ConfigJson.Options),
    };

    /// <summary>
    /// SD3-style latent normalisation from the trained encoder: the mean and standard deviation of posterior samples of
    /// <paramref name="count"/> training scenes (drawn with <paramref name="seed"/>) give <c>shift_factor = mean</c> and
    /// <c>scaling_factor = 1 / std</c>.
    /// </summary>
    public static (double Shift, double Scale) LatentStatistics(AutoencoderKL vae, int count, long seed, int imageSize = ShapeScenes.DefaultImageSize, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 2);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var generator = new torch.Generator((ulong)seed);
        var batches = new SceneBatches(seed ^ 0x5EED, Math.Min(count, 16));
        var samples = new List<Tensor>();
        for (int b = 0; samples.Sum(s => s.shape[0]) < count; b++)
        {
            var x = SceneTensors.Draw(batches.Batch(b), imageSize, device);
            using var posterior = vae.Encode(x);
            samples.Add(posterior.Sample(generator).to(ScalarType.Float64).cpu());
        }
        var all = cat(samples.ToArray()).narrow(0, 0, count);
        double mean = all.mean().item<double>(), std = all.std().item<double>();
        return (mean, 1.0 / std);
    }
}
