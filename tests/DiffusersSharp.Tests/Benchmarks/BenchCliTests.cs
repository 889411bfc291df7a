using System.Text.Json;
using DiffusersSharp.Tests.Cli;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Benchmarks;

/// <summary>The <c>bench</c> verb on the tiny model: one JSON document with every measure of diffusers' reference script.</summary>
public sealed class BenchCliTests
{
    private static readonly string Model = Fixtures.TinySd3Model;

    private static JsonElement RunBench(params string[] extra)
    {
        string[] args = ["bench", "--device", "cpu", "--dtype", "float32", "--height", "64", "--width", "48", "--steps", "2",
            "--warmup", "1", "--runs", "3", .. extra];
        var (code, stdout, stderr) = CliRunner.Run(args);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout); // exactly one document: Parse rejects trailing content
        return doc.RootElement.Clone();
    }

    private static void AssertTiming(JsonElement timing, int runs, string input)
    {
        Assert.Equal(input, timing.GetProperty("input").GetString());
        var values = timing.GetProperty("runs_ms").EnumerateArray().Select(v => v.GetDouble()).ToArray();
        Assert.Equal(runs, values.Length);
        Assert.All(values, v => Assert.True(v > 0));
        Assert.Single(timing.GetProperty("warmup_ms").EnumerateArray());
        Assert.Equal(Math.Round(values.Order().ElementAt(runs / 2), 3), timing.GetProperty("median_ms").GetDouble(), 6);
        Assert.Equal(values.Min(), timing.GetProperty("min_ms").GetDouble());
    }

    [Fact]
    public void LoadedTinyModelReportsEveryMeasure()
    {
        var r = RunBench("--model", Model);
        Assert.Equal(Model, r.GetProperty("model").GetString());
        Assert.Equal(JsonValueKind.Null, r.GetProperty("random_weights").ValueKind);
        Assert.Equal(("cpu", "float32", 64, 48, 2, 4.5), (r.GetProperty("device").GetString(), r.GetProperty("dtype").GetString(),
            r.GetProperty("height").GetInt32(), r.GetProperty("width").GetInt32(), r.GetProperty("steps").GetInt32(), r.GetProperty("guidance_scale").GetDouble()));
        Assert.Equal(333, r.GetProperty("text_tokens").GetInt32());
        Assert.Equal("none", r.GetProperty("offload").GetString());
        Assert.True(r.GetProperty("t5").GetBoolean());

        AssertTiming(r.GetProperty("transformer_forward"), 3, "batch 2 x 16x8x6 latents + 333 text tokens, timestep 500");
        AssertTiming(r.GetProperty("pipeline"), 3, "48x64, 2 steps, guidance 4.5, prompt embeddings 1x333, image output");
        AssertTiming(r.GetProperty("vae_decode"), 3, "1 x 16x8x6 latents -> 48x64");
        var encoders = r.GetProperty("text_encoders");
        AssertTiming(encoders.GetProperty("clip_l"), 3, "batch 2 x 77 tokens, all hidden states");
        AssertTiming(encoders.GetProperty("clip_g"), 3, "batch 2 x 77 tokens, all hidden states");
        AssertTiming(encoders.GetProperty("t5"), 3, "batch 2 x 256 tokens");

        var summary = r.GetProperty("summary");
        Assert.Equal(r.GetProperty("transformer_forward").GetProperty("median_ms").GetDouble(), summary.GetProperty("transformer_step_b2_ms").GetDouble());
        Assert.Equal(r.GetProperty("vae_decode").GetProperty("median_ms").GetDouble(), summary.GetProperty("vae_decode_ms").GetDouble());
        double pipelineS = summary.GetProperty("pipeline_s").GetDouble();
        Assert.InRange(pipelineS - r.GetProperty("pipeline").GetProperty("median_ms").GetDouble() / 1000, -0.0005001, 0.0005001); // pipeline_s has 3 decimals
        // it/s is computed from the unrounded median; the JSON's median_ms is rounded to 1 us, so compare relatively.
        double itPerS = 2 / (r.GetProperty("pipeline").GetProperty("median_ms").GetDouble() / 1000);
        Assert.True(Math.Abs(itPerS - r.GetProperty("pipeline_it_per_s").GetDouble()) <= 1e-3 * itPerS,
            $"pipeline_it_per_s {r.GetProperty("pipeline_it_per_s").GetDouble()} vs {itPerS} from median_ms");
        foreach (var key in new[] { "t5xxl_b2_256_ms", "clipg_b2_ms", "clipl_b2_ms", "pipeline_peak_mem_GiB", "first_image_s" })
            Assert.True(summary.GetProperty(key).GetDouble() > 0, key);

        var memory = r.GetProperty("memory");
        Assert.Equal("process_peak_working_set", memory.GetProperty("method").GetString());
        Assert.True(memory.GetProperty("peak_gib").GetDouble() > 0.01);

        var cold = r.GetProperty("cold_start");
        double[] marks = new[] { "bench_start_s", "device_ready_s", "models_ready_s", "first_image_s" }.Select(k => cold.GetProperty(k).GetDouble()).ToArray();
        Assert.True(marks[0] >= 0);
        Assert.Equal(marks.Order(), marks); // in the order they happen
        var load = cold.GetProperty("component_load_ms");
        Assert.Equal(["text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae"], load.EnumerateObject().Select(p => p.Name).Order());

        var parameters = r.GetProperty("parameters");
        Assert.Equal(5, parameters.EnumerateObject().Count());
        Assert.True(parameters.GetProperty("transformer").GetInt64() > 0);
        var machine = r.GetProperty("machine");
        Assert.Equal("cpu", machine.GetProperty("device_name").GetString());
        Assert.Equal(Environment.ProcessorCount, machine.GetProperty("cpu_count").GetInt32());
        Assert.Equal(0, machine.GetProperty("cuda_device_count").GetInt32());
    }

    [Fact]
    public void RandomWeightsFromConfigsWithOffloadAndNoT5()
    {
        var loaded = RunBench("--model", Model, "--runs", "1").GetProperty("parameters");
        var r = RunBench("--random-weights", Model, "--offload", "model", "--no-t5", "--runs", "1", "--guidance", "1", "--max-sequence-length", "8");
        Assert.Equal(Path.GetFullPath(Model), r.GetProperty("random_weights").GetString());
        Assert.Equal("model", r.GetProperty("offload").GetString());
        Assert.False(r.GetProperty("t5").GetBoolean());
        Assert.True(r.GetProperty("collapsed_text").GetBoolean());
        Assert.Equal(85, r.GetProperty("text_tokens").GetInt32());
        var encoders = r.GetProperty("text_encoders");
        Assert.Equal(["clip_g", "clip_l"], encoders.EnumerateObject().Select(p => p.Name).Order());
        Assert.Equal(JsonValueKind.Null, r.GetProperty("summary").GetProperty("t5xxl_b2_8_ms").ValueKind);
        // The same architectures as the loaded model, built from its configs only.
        foreach (var name in new[] { "transformer", "vae", "text_encoder", "text_encoder_2" })
            Assert.Equal(loaded.GetProperty(name).GetInt64(), r.GetProperty("parameters").GetProperty(name).GetInt64());
        Assert.Equal(["transformer", "vae"], r.GetProperty("cold_start").GetProperty("component_load_ms").EnumerateObject().Select(p => p.Name));
    }

    [Theory]
    [InlineData("--model|M|--random-weights|sd3.5-medium", "exactly one")]
    [InlineData("--steps|2", "exactly one")]
    [InlineData("--random-weights|sd9-huge", "sd9-huge")]
    [InlineData("--model|M|--offload|sequential", "--offload")]
    [InlineData("--model|M|--height|60", "multiples of 16")]
    [InlineData("--model|M|--runs|0", "runs")]
    [InlineData("--model|M|--dtype|int8", "int8")]
    [InlineData("--model|M|--full-text-sequence", "--no-t5")]
    [InlineData("--model|M|--collapse-text", "--no-t5")]
    [InlineData("--model|M|--no-t5|--collapse-text|--full-text-sequence", "not both")]
    public void BadOptionsExitWithCode2BeforeLoading(string args, string message)
    {
        var list = args.Split('|').Select(a => a == "M" ? Model : a).ToList();
        var (code, stdout, stderr) = CliRunner.Run(["bench", .. list]);
        Assert.Equal(2, code);
        Assert.Empty(stdout);
        Assert.Contains(message, stderr);
    }
}
