using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// The random draws every pipeline makes, in diffusers' way: <c>randn_tensor</c> and the VAE posterior sample of
/// <c>retrieve_latents</c>. Shared so that a seed means the same numbers in every pipeline family.
/// </summary>
internal static class RandomDraws
{
    /// <summary>
    /// <c>randn(shape)</c> like diffusers' <c>randn_tensor</c>: one generator for the batch, or one per sample (each
    /// drawing a [1, ...] slice); without a generator, from a fresh random seed. A CPU generator draws on the CPU and the
    /// noise is moved to <paramref name="device"/>, so a seed gives the same image on every device up to the device's
    /// arithmetic; a CUDA generator draws on the GPU (the numbers of <c>torch.Generator("cuda")</c>).
    /// </summary>
    public static Tensor Randn(long[] shape, Generator? generator, IReadOnlyList<Generator>? generators, ScalarType dtype, Device device)
    {
        if (generators is { Count: > 1 } list)
        {
            if (list.Count != shape[0])
                throw new ArgumentException($"{list.Count} generators were given for a batch of {shape[0]}.");
            var one = shape.ToArray();
            one[0] = 1;
            var parts = list.Select(g => g.Randn(one, dtype, device)).ToArray();
            var result = cat(parts, 0);
            foreach (var p in parts) p.Dispose();
            return result;
        }
        var single = generator ?? generators?[0];
        if (single is not null) return single.Randn(shape, dtype, device);
        using var fresh = new Generator(CPU).ManualSeed(Random.Shared.NextInt64());
        return fresh.Randn(shape, dtype, device);
    }

    /// <summary>
    /// A VAE posterior sample of <paramref name="image"/> (diffusers' <c>retrieve_latents(vae.encode(image), generator)</c>):
    /// mean + std * randn, drawn from <paramref name="generator"/>, or per image from a list of generators. Unscaled.
    /// </summary>
    public static Tensor SampleVae(AutoencoderKL vae, Tensor image, Generator? generator, IReadOnlyList<Generator>? generators, Device device) =>
        SampleVae((vae ?? throw new ArgumentNullException(nameof(vae))).Encode, vae.WeightDtype(), image, generator, generators, device);

    /// <summary>
    /// <see cref="SampleVae(AutoencoderKL, Tensor, Generator?, IReadOnlyList{Generator}?, Device)"/> for any VAE: <paramref name="encode"/>
    /// gives the posterior of images in <paramref name="weightDtype"/> (e.g. the Qwen-Image VAE's, of [N, 3, 1, H, W] frames).
    /// </summary>
    public static Tensor SampleVae(Func<Tensor, DiagonalGaussianDistribution> encode, ScalarType weightDtype, Tensor image, Generator? generator,
        IReadOnlyList<Generator>? generators, Device device)
    {
        using var scope = NewDisposeScope();
        image = image.to(weightDtype, device);
        Tensor result;
        if (generators is { Count: > 1 } list)
        {
            if (list.Count < image.shape[0])
                throw new ArgumentException($"{list.Count} generators were given for {image.shape[0]} images.");
            var parts = new List<Tensor>();
            for (int i = 0; i < image.shape[0]; i++)
            {
                using var dist = encode(image[i..(i + 1)]);
                parts.Add(dist.Mean + dist.Std * list[i].Randn(dist.Mean.shape, dist.Mean.dtype, device));
            }
            result = cat(parts, 0);
        }
        else
        {
            using var dist = encode(image);
            result = dist.Mean + dist.Std * Randn(dist.Mean.shape, generator, generators, dist.Mean.dtype, device);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The draws of <see cref="SampleVae(AutoencoderKL, Tensor, Generator?, IReadOnlyList{Generator}?, Device)"/> for images whose posterior is <paramref name="latentShape"/>, without the
    /// encode: leaves the generator(s) where that sample would. For a sample diffusers makes and never reads.
    /// </summary>
    public static void SkipVaeSample(long[] latentShape, Generator? generator, IReadOnlyList<Generator>? generators, ScalarType dtype, Device device)
    {
        if (generators is { Count: > 1 } list)
        {
            if (list.Count < latentShape[0])
                throw new ArgumentException($"{list.Count} generators were given for {latentShape[0]} images.");
            var one = latentShape.ToArray();
            one[0] = 1;
            for (int i = 0; i < latentShape[0]; i++) list[i].Randn(one, dtype, device).Dispose();
        }
        else if ((generator ?? generators?[0]) is { } single) single.Randn(latentShape, dtype, device).Dispose();
    }
}
