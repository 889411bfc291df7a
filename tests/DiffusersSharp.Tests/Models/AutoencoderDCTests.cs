using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// AutoencoderDC (Sana's DC-AE) against diffusers v0.39.0's own outputs (local-diffusers/sana-dcae, written by
/// tools/reference/sana_dcae.py): a tiny model in the structure of dc-ae-f32c32-sana-1.0 ("sana": strided-conv
/// downsampling, interpolating upsampling, RMSNorm / SiLU, both shortcuts, one multiscale kernel) and one with the other
/// options ("options": first levels without layers so conv_in / conv_out resample, pixel unshuffle / shuffle,
/// BatchNorm and relu / gelu decoder levels, a BatchNorm attention, kernels (3, 5) and none, shortcuts off). The 16 x 24
/// images and 2 x 3 latents take the quadratic attention at the last level (6 positions, attention_head_dim 8) and the
/// linear one elsewhere; the 32 x 48 images and 4 x 6 latents take the linear one everywhere.
/// </summary>
public class AutoencoderDCTests(ITestOutputHelper output)
{
    private static string Folder(string model) => Fixtures.Path($"local-diffusers/sana-dcae/{model}");

    private static Tensor E(string key)
    {
        using var file = SafetensorsFile.Open(Fixtures.Path("local-diffusers/sana-dcae/expected.safetensors"));
        return file.Read(key).clone();
    }

    // Float32; the tests print their measured max |diff|. TensorAssert scales a bound by max(1, max |expected|).
    private const double EncodeTolerance = 1e-5;
    private const double DecodeTolerance = 1e-5;

    [Theory]
    [InlineData("sana", "x16")]
    [InlineData("sana", "x32")]
    [InlineData("options", "x16")]
    [InlineData("options", "x32")]
    public void EncodeMatchesDiffusers(string model, string input)
    {
        using var vae = AutoencoderDC.FromPretrained(Folder(model));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var latent = vae.Encode(E($"{model}.{input}"));
        double err = TensorAssert.Close(latent, E($"{model}.{input}.latent"), EncodeTolerance, "latent");
        output.WriteLine($"{model} encode {input} -> {string.Join("x", latent.shape)}: max |diff| {err:G3}");
    }

    [Theory]
    [InlineData("sana", "z2")]
    [InlineData("sana", "z4")]
    [InlineData("options", "z2")]
    [InlineData("options", "z4")]
    public void DecodeMatchesDiffusers(string model, string input)
    {
        using var vae = AutoencoderDC.FromPretrained(Folder(model));
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var sample = vae.Decode(E($"{model}.{input}"));
        double err = TensorAssert.Close(sample, E($"{model}.{input}.sample"), DecodeTolerance, "sample");
        output.WriteLine($"{model} decode {input} -> {string.Join("x", sample.shape)}: max |diff| {err:G3}");
    }
}
