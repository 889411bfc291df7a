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
/// AutoencoderKLFlux2 against diffusers v0.39.0's own outputs (local-diffusers/flux2-vae, written by
/// tools/reference/flux2_vae.py): a tiny model whose decoder widths differ from the encoder's and whose bn statistics
/// are non-trivial, encode / decode, and Flux2KleinPipeline's VAE helpers (bn normalise + patchify, bn de-normalise +
/// unpatchify + decode) written here as the pipeline does, so a port of the pipeline can be checked against them.
/// </summary>
public class AutoencoderKLFlux2Tests(ITestOutputHelper output)
{
    private static string Folder => Fixtures.Path("local-diffusers/flux2-vae/vae");

    private static Tensor E(string key)
    {
        using var file = SafetensorsFile.Open(Fixtures.Path("local-diffusers/flux2-vae/expected.safetensors"));
        return file.Read(key).clone();
    }

    // Float32, 16 x 24 images: measured max |diff| encode 5.7e-7 (values below 1; pipeline-normalised 1.0e-6 on values up
    // to 1.3), decode 4.5e-6 (values up to 2.1); the tests print theirs. TensorAssert scales a bound by
    // max(1, max |expected|): encode 3e-6 (3e-6 .. 3.9e-6), decode 1e-5 (2.1e-5), about four to five times the measured.
    private const double EncodeTolerance = 3e-6;
    private const double DecodeTolerance = 1e-5;

    [Fact]
    public void EncodeMatchesDiffusers()
    {
        using var vae = AutoencoderKLFlux2.FromPretrained(Folder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        using var posterior = vae.Encode(E("x"));
        double parametersErr = TensorAssert.Close(posterior.Parameters, E("parameters"), EncodeTolerance, "parameters");
        double meanErr = TensorAssert.Close(posterior.Mean, E("mean"), EncodeTolerance, "mean");
        double logvarErr = TensorAssert.Close(posterior.LogVar, E("logvar"), EncodeTolerance, "logvar");
        output.WriteLine($"encode {string.Join("x", posterior.Parameters.shape)}: max |diff| parameters {parametersErr:G3}, mean {meanErr:G3}, logvar {logvarErr:G3}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DecodeMatchesDiffusers(bool slicing)
    {
        using var vae = AutoencoderKLFlux2.FromPretrained(Folder);
        vae.UseSlicing = slicing;
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var decoded = vae.Decode(E("z"));
        double err = TensorAssert.Close(decoded, E("decoded"), DecodeTolerance, "decoded");
        // Two items through the slicing path too.
        var pipeDecoded = vae.Decode(E("pipe.unpatchified"));
        double pipeErr = TensorAssert.Close(pipeDecoded, E("pipe.decoded"), DecodeTolerance, "pipe.decoded");
        output.WriteLine($"slicing {slicing}: decode {string.Join("x", decoded.shape)} max |diff| {err:G3}; two items {pipeErr:G3}");
    }

    [Fact]
    public void LatentStatisticsAreThePipelines()
    {
        using var vae = AutoencoderKLFlux2.FromPretrained(Folder);
        using var scope = NewDisposeScope();
        var (mean, std) = vae.LatentStatistics(ScalarType.Float32, CPU);
        Assert.Equal([1L, 16, 1, 1], mean.shape);
        Assert.Equal([1L, 16, 1, 1], std.shape);
        double meanErr = TensorAssert.Close(mean, E("bn.mean"), 0, "bn.mean");
        double stdErr = TensorAssert.Close(std, E("bn.std"), 1e-7, "bn.std");
        output.WriteLine($"float32 statistics: max |diff| mean {meanErr:G3}, std {stdErr:G3}");

        // A bfloat16 load holds bfloat16 statistics, and the pipeline's sqrt(var + eps) runs in bfloat16: bit-equal.
        using var half = AutoencoderKLFlux2.FromPretrained(Folder, ScalarType.BFloat16);
        var (halfMean, halfStd) = half.LatentStatistics(ScalarType.BFloat16, CPU);
        Assert.Equal(ScalarType.BFloat16, halfStd.dtype);
        TensorAssert.Close(halfMean.to(ScalarType.Float32), E("bn.bf16.mean"), 0, "bn.bf16.mean");
        TensorAssert.Close(halfStd.to(ScalarType.Float32), E("bn.bf16.std"), 0, "bn.bf16.std");
    }

    /// <summary>Flux2KleinPipeline._encode_vae_image: the posterior's mode, patchified 2 x 2, bn-normalised.</summary>
    [Fact]
    public void PipelineEncodeHelperMatchesDiffusers()
    {
        using var vae = AutoencoderKLFlux2.FromPretrained(Folder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        using var posterior = vae.Encode(E("x"));
        var latents = Patchify(posterior.Mode());
        var (mean, std) = vae.LatentStatistics(latents.dtype, latents.device);
        var normalised = (latents - mean) / std;
        double err = TensorAssert.Close(normalised, E("pipe.encoded"), EncodeTolerance, "pipe.encoded");
        output.WriteLine($"_encode_vae_image {string.Join("x", normalised.shape)}: max |diff| {err:G3}");
    }

    /// <summary>The end of Flux2KleinPipeline.__call__: bn de-normalise, unpatchify, decode.</summary>
    [Fact]
    public void PipelineDecodePathMatchesDiffusers()
    {
        using var vae = AutoencoderKLFlux2.FromPretrained(Folder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var latents = E("pipe.latents");
        var (mean, std) = vae.LatentStatistics(latents.dtype, latents.device);
        var unpatchified = Unpatchify(latents * std + mean);
        double unpatchErr = TensorAssert.Close(unpatchified, E("pipe.unpatchified"), 1e-6, "pipe.unpatchified");
        var decoded = vae.Decode(unpatchified);
        double err = TensorAssert.Close(decoded, E("pipe.decoded"), DecodeTolerance, "pipe.decoded");
        output.WriteLine($"decode path: unpatchified max |diff| {unpatchErr:G3}, decoded {string.Join("x", decoded.shape)} {err:G3}");
    }

    // The pipeline's _patchify_latents / _unpatchify_latents, for the tests only (the pipeline port owns its own).
    private static Tensor Patchify(Tensor x)
    {
        long b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        return x.view(b, c, h / 2, 2, w / 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h / 2, w / 2);
    }

    private static Tensor Unpatchify(Tensor x)
    {
        long b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        return x.reshape(b, c / 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c / 4, h * 2, w * 2);
    }

    [Fact]
    public void ConfigIsReadWithTheDecodersOwnWidths()
    {
        using var vae = AutoencoderKLFlux2.FromPretrained(Folder);
        Assert.Equal([8, 16, 16], vae.Config.BlockOutChannels);
        Assert.Equal([4, 8, 12], vae.Config.DecoderBlockOutChannels!);
        Assert.Equal(4, vae.VaeScaleFactor);
        Assert.Equal(16, vae.Config.BatchNormChannels);
        var state = vae.state_dict();
        Assert.Equal([12L, 4, 3, 3], state["decoder.conv_in.weight"].shape);
        Assert.Equal([3L, 4, 3, 3], state["decoder.conv_out.weight"].shape);
        Assert.Equal(ScalarType.Int64, state["bn.num_batches_tracked"].dtype);
        Assert.Equal(1234L, state["bn.num_batches_tracked"].item<long>());
    }

    [Fact]
    public void DefaultConfigIsTheDiffusersConstructorDefault()
    {
        var config = ConfigJson.Parse<AutoencoderKLFlux2Config>("{}");
        Assert.Equal([128, 256, 512, 512], config.BlockOutChannels);
        Assert.Null(config.DecoderBlockOutChannels);
        Assert.Equal([128, 256, 512, 512], config.EffectiveDecoderBlockOutChannels);
        Assert.Equal(32, config.LatentChannels);
        Assert.Equal(2, config.LayersPerBlock);
        Assert.Equal(1024, config.SampleSize);
        Assert.Equal(1e-4, config.BatchNormEps);
        Assert.Equal(0.1, config.BatchNormMomentum);
        Assert.Equal([2, 2], config.PatchSize);
        Assert.Equal(128, config.BatchNormChannels);
        Assert.Equal(8, config.VaeScaleFactor);
    }

    /// <summary>The full-size model (FLUX.2's VAE config) has diffusers' state-dict keys, counts and shapes (counts.json).</summary>
    [Fact]
    public void FullSizeModelHasDiffusersCounts()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/flux2-vae/counts.json")))!;
        using var vae = new AutoencoderKLFlux2(new AutoencoderKLFlux2Config(), META);
        var state = vae.state_dict();
        Assert.Equal(counts["keys"]!.GetValue<int>(), state.Count);
        Assert.Equal(counts["elements"]!.GetValue<long>(), state.Values.Sum(t => t.numel()));
        foreach (var (key, shape) in counts["shapes"]!.AsObject())
            Assert.Equal(shape!.AsArray().Select(d => d!.GetValue<long>()).ToArray(), state[key].shape);
        Assert.Contains("AutoencoderKLFlux2", ModelRegistry.KnownClasses);
        using var built = ModelRegistry.Build("vae", "AutoencoderKLFlux2", Fixtures.Path("local-diffusers/flux2-vae/vae"), META);
    }

    [Fact]
    public void LoadingIsStrict()
    {
        string dir = Directory.CreateTempSubdirectory("flux2-vae-strict").FullName;
        try
        {
            File.Copy(Path.Combine(Folder, "config.json"), Path.Combine(dir, "config.json"));
            Dictionary<string, Tensor> weights;
            using (var file = SafetensorsFile.Open(Path.Combine(Folder, "diffusion_pytorch_model.safetensors")))
                weights = file.ReadAll();
            string weightsPath = Path.Combine(dir, "diffusion_pytorch_model.safetensors");

            // Each bn buffer is required, the int64 counter included.
            foreach (var key in new[] { "bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "decoder.conv_in.weight" })
            {
                SafetensorsWriter.Save(weightsPath, weights.Where(kv => kv.Key != key).ToDictionary(kv => kv.Key, kv => kv.Value));
                var missing = Assert.Throws<WeightLoadException>(() => AutoencoderKLFlux2.FromPretrained(dir));
                Assert.Contains(key, missing.Message);
            }

            // An unexpected key (an affine bn weight this model does not have).
            SafetensorsWriter.Save(weightsPath, new Dictionary<string, Tensor>(weights) { ["bn.weight"] = ones(16) });
            var unexpected = Assert.Throws<WeightLoadException>(() => AutoencoderKLFlux2.FromPretrained(dir));
            Assert.Contains("bn.weight", unexpected.Message);

            // Statistics of the wrong size.
            SafetensorsWriter.Save(weightsPath, new Dictionary<string, Tensor>(weights) { ["bn.running_var"] = ones(32) });
            Assert.Throws<WeightLoadException>(() => AutoencoderKLFlux2.FromPretrained(dir));

            // The encoder's widths for the decoder (a config without decoder_block_out_channels) do not fit the weights.
            SafetensorsWriter.Save(weightsPath, weights);
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, "config.json")))!.AsObject();
            json.Remove("decoder_block_out_channels");
            File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
            Assert.Throws<WeightLoadException>(() => AutoencoderKLFlux2.FromPretrained(dir));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void BadConfigsGiveClearErrors()
    {
        var tiny = ConfigJson.Read<AutoencoderKLFlux2Config>(Path.Combine(Folder, "config.json"));
        var levels = Assert.Throws<ArgumentException>(() => new AutoencoderKLFlux2(tiny with { DecoderBlockOutChannels = [4, 8] }, META));
        Assert.Contains("up_block_types", levels.Message);
        var groups = Assert.Throws<ArgumentException>(() => new AutoencoderKLFlux2(tiny with { DecoderBlockOutChannels = [4, 8, 6] }, META));
        Assert.Contains("norm_num_groups", groups.Message);
        var block = Assert.Throws<ArgumentException>(() => new AutoencoderKLFlux2(tiny with { UpBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D", "AttnUpDecoderBlock2D"] }, META));
        Assert.Contains("AttnUpDecoderBlock2D", block.Message);
        var patch = Assert.Throws<ArgumentException>(() => new AutoencoderKLFlux2(tiny with { PatchSize = [2] }, META));
        Assert.Contains("patch_size", patch.Message);
        var eps = Assert.Throws<ArgumentException>(() => new AutoencoderKLFlux2(tiny with { BatchNormEps = 0 }, META));
        Assert.Contains("batch_norm_eps", eps.Message);
    }

    [Fact]
    public void BadInputsGiveClearErrors()
    {
        using var vae = AutoencoderKLFlux2.FromPretrained(Folder);
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var scale = Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 16, 18])));
        Assert.Contains("multiples of the VAE scale factor 4", scale.Message);
        var channels = Assert.Throws<ArgumentException>(() => vae.Decode(zeros([1, 16, 2, 3])));
        Assert.Contains("4 channels", channels.Message);
        var dtype = Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 16, 24], ScalarType.Float64)));
        Assert.Contains("Float64", dtype.Message);
    }
}
