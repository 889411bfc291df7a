using System.Text.Json;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Cli;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Benchmarks;

/// <summary>
/// The <c>bench</c> verb end to end on the tiny SDXL, SD 1.5 and Flux folders (loaded, and rebuilt with random weights
/// from their configs): the family's measures, summary keys and defaults, and parameter counts equal to the weight files.
/// </summary>
public sealed class BenchFamiliesCliTests : IDisposable
{
    private static readonly string Sdxl = Fixtures.Path("tiny-sdxl/model");
    private static readonly string Sd15 = Fixtures.Path("tiny-sd15/model");
    private readonly string _dir = Directory.CreateTempSubdirectory("bench-flux").FullName;
    private readonly string _flux;

    public BenchFamiliesCliTests()
    {
        _flux = Path.Combine(_dir, "model");
        TinyFluxPipelineFolder.Write(_flux);
    }

    public void Dispose() => Directory.Delete(_dir, true);

    private static JsonElement RunBench(params string[] args)
    {
        var (code, stdout, stderr) = CliRunner.Run(["bench", "--device", "cpu", "--dtype", "float32", "--warmup", "1", "--runs", "2", .. args]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        return doc.RootElement.Clone();
    }

    /// <summary>Elements stored in a component's weight files: what its parameter count must be.</summary>
    private static long StoredElements(string folder, string component)
    {
        using var weights = WeightFiles.TryOpen(Path.Combine(folder, component))!;
        return weights.Tensors.Values.Sum(t => t.ElementCount);
    }

    private static void AssertTiming(JsonElement timing, string input)
    {
        Assert.Equal(input, timing.GetProperty("input").GetString());
        Assert.Equal(2, timing.GetProperty("runs_ms").GetArrayLength());
        Assert.All(timing.GetProperty("runs_ms").EnumerateArray(), v => Assert.True(v.GetDouble() > 0));
        Assert.True(timing.GetProperty("median_ms").GetDouble() > 0);
    }

    private static void AssertSummary(JsonElement r, params string[] keys)
    {
        var summary = r.GetProperty("summary");
        string[] expected = [.. keys, "vae_decode_ms", "pipeline_s", "pipeline_it_per_s", "pipeline_peak_mem_GiB", "first_image_s"];
        Assert.Equal(expected.Order(), summary.EnumerateObject().Select(p => p.Name).Order());
        foreach (var p in summary.EnumerateObject()) Assert.True(p.Value.GetDouble() > 0, p.Name);
        var cold = r.GetProperty("cold_start");
        double[] marks = [.. new[] { "bench_start_s", "device_ready_s", "models_ready_s", "first_image_s" }.Select(k => cold.GetProperty(k).GetDouble())];
        Assert.Equal(marks.Order(), marks);
        Assert.True(r.GetProperty("memory").GetProperty("peak_gib").GetDouble() > 0);
    }

    [Fact]
    public void SdxlFolderReportsUnetMeasuresAndItsParameterCounts()
    {
        var r = RunBench("--model", Sdxl, "--height", "64", "--width", "48", "--steps", "2");
        Assert.Equal("StableDiffusionXLPipeline", r.GetProperty("pipeline_class").GetString());
        Assert.Equal((5.0, 77, false), (r.GetProperty("guidance_scale").GetDouble(), r.GetProperty("text_tokens").GetInt32(), r.GetProperty("t5").GetBoolean()));
        Assert.False(r.TryGetProperty("transformer_forward", out _));
        AssertTiming(r.GetProperty("unet_forward"), "batch 2 x 4x8x6 latents + 77 text tokens + pooled 32 + 6 time ids, timestep 500");
        AssertTiming(r.GetProperty("pipeline"), "48x64, 2 steps, guidance 5, EulerDiscreteScheduler, prompt embeddings 1x77 + pooled, image output");
        AssertTiming(r.GetProperty("vae_decode"), "1 x 4x8x6 latents -> 48x64");
        AssertTiming(r.GetProperty("text_encoders").GetProperty("clip_l"), "batch 2 x 77 tokens, all hidden states");
        AssertTiming(r.GetProperty("text_encoders").GetProperty("clip_g"), "batch 2 x 77 tokens, all hidden states");
        AssertSummary(r, "unet_step_b2_ms", "clipl_b2_ms", "clipg_b2_ms");
        var parameters = r.GetProperty("parameters");
        foreach (var component in new[] { "unet", "vae", "text_encoder", "text_encoder_2" })
            Assert.Equal(StoredElements(Sdxl, component), parameters.GetProperty(component).GetInt64());
        Assert.Equal(["text_encoder", "text_encoder_2", "unet", "vae"], r.GetProperty("cold_start").GetProperty("component_load_ms").EnumerateObject().Select(p => p.Name).Order());
    }

    [Fact]
    public void Sd15RandomWeightsFromConfigsUseTheFamilyDefaultsAndTheModelsCounts()
    {
        // No --height / --steps / --guidance: the UNet's 32 x 8 = 256 px (tiny-sd15's sample_size 32), 50 steps, 7.5.
        var r = RunBench("--random-weights", Sd15, "--runs", "2", "--steps", "2", "--offload", "model");
        Assert.Equal("StableDiffusionPipeline", r.GetProperty("pipeline_class").GetString());
        Assert.Equal(Path.GetFullPath(Sd15), r.GetProperty("random_weights").GetString());
        int size = r.GetProperty("height").GetInt32();
        Assert.Equal((size, 7.5), (r.GetProperty("width").GetInt32(), r.GetProperty("guidance_scale").GetDouble()));
        Assert.Equal(8 * JsonDocument.Parse(File.ReadAllText(Path.Combine(Sd15, "unet", "config.json"))).RootElement.GetProperty("sample_size").GetInt32(), size);
        AssertTiming(r.GetProperty("text_encoders").GetProperty("clip_l"), "batch 2 x 77 tokens");
        Assert.Equal(["clip_l"], r.GetProperty("text_encoders").EnumerateObject().Select(p => p.Name));
        AssertSummary(r, "unet_step_b2_ms", "clipl_b2_ms");
        foreach (var component in new[] { "unet", "vae", "text_encoder" })
            Assert.Equal(StoredElements(Sd15, component), r.GetProperty("parameters").GetProperty(component).GetInt64());
        Assert.Equal(["unet", "vae"], r.GetProperty("cold_start").GetProperty("component_load_ms").EnumerateObject().Select(p => p.Name));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FluxFolderReportsBatch1TransformerAndT5Measures(bool random)
    {
        var r = RunBench(random ? "--random-weights" : "--model", _flux, "--height", "64", "--width", "48", "--steps", "2", "--max-sequence-length", "8");
        Assert.Equal("FluxPipeline", r.GetProperty("pipeline_class").GetString());
        // The tiny transformer has a guidance embedding (as FLUX.1-dev): default guidance 3.5.
        Assert.Equal((3.5, 8, true), (r.GetProperty("guidance_scale").GetDouble(), r.GetProperty("text_tokens").GetInt32(), r.GetProperty("t5").GetBoolean()));
        Assert.False(r.TryGetProperty("unet_forward", out _));
        AssertTiming(r.GetProperty("transformer_forward"), "batch 1 x 12 image tokens (64 channels) + 8 text tokens, timestep 500, guidance 3.5");
        AssertTiming(r.GetProperty("pipeline"), "48x64, 2 steps, guidance 3.5 (embedded), prompt embeddings 1x8 + pooled, image output");
        AssertTiming(r.GetProperty("vae_decode"), "1 x 16x8x6 latents -> 48x64");
        AssertTiming(r.GetProperty("text_encoders").GetProperty("clip_l"), "batch 1 x 77 tokens");
        AssertTiming(r.GetProperty("text_encoders").GetProperty("t5"), "batch 1 x 8 tokens");
        AssertSummary(r, "transformer_step_b1_ms", "t5xxl_b1_8_ms", "clipl_b1_ms");
        foreach (var component in new[] { "transformer", "vae", "text_encoder", "text_encoder_2" })
            Assert.Equal(StoredElements(_flux, component), r.GetProperty("parameters").GetProperty(component).GetInt64());
    }

    private string FillFolder()
    {
        string folder = Path.Combine(_dir, "fill");
        TinyFluxPipelineFolder.Write(folder, pipelineClass: "FluxFillPipeline", inChannels: 384);
        return folder;
    }

    [Theory]
    [InlineData("--model|SDXL|--max-sequence-length|77", "--max-sequence-length applies to models with T5")]
    [InlineData("--model|SD15|--no-t5", "--no-t5 applies to Stable Diffusion 3")]
    [InlineData("--model|FLUX|--no-t5", "--no-t5 applies to Stable Diffusion 3")]
    [InlineData("--random-weights|sd1.5|--no-t5|--full-text-sequence", "--no-t5 applies to Stable Diffusion 3")]
    [InlineData("--random-weights|flux.1-schnell|--guidance|3.5", "no guidance embedding")]
    [InlineData("--random-weights|flux.1-dev|--height|1000", "multiples of 16 for a FluxPipeline")]
    [InlineData("--random-weights|sdxl-base|--width|1020", "multiples of 8 for a StableDiffusionXLPipeline")]
    [InlineData("--random-weights|flux.1-dev|--max-sequence-length|600", "max_sequence_length")]
    [InlineData("--model|FILL", "a FluxFillPipeline (it needs an input image) is not benchmarked")]
    public void OptionsAFamilyLacksExitWithCode2BeforeLoading(string args, string message)
    {
        var list = args.Split('|').Select(a => a switch { "SDXL" => Sdxl, "SD15" => Sd15, "FLUX" => _flux, "FILL" => FillFolder(), _ => a }).ToList();
        var (code, stdout, stderr) = CliRunner.Run(["bench", .. list]);
        Assert.Equal(2, code);
        Assert.Empty(stdout);
        Assert.Contains(message, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
