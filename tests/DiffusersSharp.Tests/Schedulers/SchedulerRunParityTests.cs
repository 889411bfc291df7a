using System.Text.Json.Nodes;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Schedulers;

/// <summary>
/// Whole sampling runs of the schedulers against diffusers' own (fixture local-diffusers/schedulers, made by
/// tools/reference/schedulers.py with diffusers 0.36.0 on torch 1.13 CPU): for each short name, four base configs
/// (tiny-sd15's, tiny-sdxl's, v_prediction with trailing spacing, linspace spacing) and 1, 4, 10 and 25 steps, the
/// timesteps and sigmas must be equal and every step's sample must match with a synthetic model
/// (<c>0.3 * scale_model_input(x, t) + 0.1 * sin(t / 100)</c>; DDPM's learned_range variance gets a second half of channels,
/// <c>0.5 * tanh(x_in)</c>), the stochastic ones drawing from the same seeded generator (TCD with its default gamma 0.3).
/// Relative error: max |ours - diffusers| / max(1, max |diffusers|) per step.
/// </summary>
public sealed class SchedulerRunParityTests(ITestOutputHelper output)
{
    private const string Folder = "local-diffusers/schedulers";
    private static readonly Lazy<Dictionary<string, Tensor>> Expected = new(() => Fixtures.Expected($"{Folder}/expected.safetensors"));
    private static readonly Lazy<JsonObject> Meta = new(() => (JsonObject)JsonNode.Parse(File.ReadAllText(Fixtures.Path($"{Folder}/meta.json")))!);

    /// <summary>Runs every case of <paramref name="name"/> and returns the largest relative step error.</summary>
    private double RunAll(string name)
    {
        var cases = ((JsonObject)Meta.Value["cases"]!).Where(c => c.Key.StartsWith(name + ".", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(cases);
        double worst = 0;
        foreach (var (key, node) in cases)
        {
            var meta = (JsonObject)node!;
            Assert.Null(meta["error"]);
            var bases = (JsonObject)Meta.Value["bases"]!;
            var config = (JsonObject)bases[(string)meta["base"]!]!.DeepClone();
            var overrides = ((JsonObject)meta["overrides"]!).ToDictionary(p => p.Key, p => p.Value!.DeepClone());
            using var scheduler = DiffusionSchedulers.FromConfig((string)meta["class"]!, config, overrides);
            bool learned = meta["learned_variance"] is JsonValue lv && lv.GetValue<bool>();
            double err = RunCase(scheduler, key, (int)meta["steps"]!, (long)meta["seed"]!, (double)meta["init_noise_sigma"]!, (int)meta["order"]!, learned);
            worst = Math.Max(worst, err);
        }
        output.WriteLine($"{name}: {cases.Count} cases, max relative step error {worst:G3}");
        return worst;
    }

    private static double RunCase(IDiffusionScheduler scheduler, string key, int steps, long seed, double initNoiseSigma, int order,
        bool learnedVariance)
    {
        var e = Expected.Value;
        scheduler.SetTimesteps(steps);
        Assert.Equal(order, scheduler.Order);
        var expectedT = e[$"{key}.timesteps"].to(ScalarType.Float32).data<float>().ToArray();
        Same(expectedT, scheduler.TimestepValues.ToArray(), $"{key}.timesteps");
        if (e.TryGetValue($"{key}.sigmas", out var sigmas) && scheduler is SigmaSchedulerBase sb)
            Same(sigmas.data<float>().ToArray(), sb.SigmaValues.ToArray(), $"{key}.sigmas");
        Assert.Equal((float)initNoiseSigma, (float)scheduler.InitNoiseSigma);

        using var scope = NewDisposeScope();
        using var generator = new Generator("cpu").ManualSeed(seed);
        var shape = e[$"{key}.init"].shape;
        var latents = generator.Randn(shape, ScalarType.Float32, CPU) * scheduler.InitNoiseSigma;
        double worst = TensorAssert.MaxAbsDiff(latents, e[$"{key}.init"]);
        for (int i = 0; i < expectedT.Length; i++)
        {
            float t = expectedT[i];
            var input = scheduler.ScaleModelInput(latents, t);
            var modelOutput = 0.3 * input + 0.1 * (tensor(t, ScalarType.Float32) / 100).sin();
            // DDPM's learned variance types: a second half of channels, the predicted variance 0.5 * tanh(x_in).
            if (learnedVariance) modelOutput = cat(new[] { modelOutput, 0.5 * input.tanh() }, 1);
            latents = scheduler.Step(modelOutput, t, latents, generator);
            var want = e[$"{key}.step{i}"];
            // NaN where diffusers has NaN (UniPC bh1's last step onto sigma 0), compared elsewhere.
            var nan = want.isnan();
            Assert.True(latents.isnan().eq(nan).all().item<bool>(), $"{key}.step{i}: NaN where diffusers has none, or the reverse");
            var (ours, theirs) = (latents.masked_fill(nan, 0), want.masked_fill(nan, 0));
            double rel = TensorAssert.MaxAbsDiff(ours, theirs) / Math.Max(1.0, theirs.abs().max().item<float>());
            worst = Math.Max(worst, rel);
        }
        return worst;
    }

    private static void Same(float[] expected, float[] actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} values, diffusers has {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
            Assert.True(expected[i].Equals(actual[i]), $"{what}[{i}]: {actual[i]:R}, diffusers {expected[i]:R}");
    }

    [Theory]
    [InlineData("dpmpp_2m_sde", 1e-6)]
    [InlineData("dpmpp_2m_sde_karras", 1e-6)]
    [InlineData("euler_karras", 1e-6)]
    [InlineData("unipc", 1e-6)]
    [InlineData("heun", 1e-6)]
    [InlineData("unipc_bh1_o3", 1e-6)]
    [InlineData("kdpm2", 1e-6)]
    [InlineData("kdpm2_a", 1e-6)]
    [InlineData("dpmpp_singlestep", 1e-6)]
    [InlineData("deis", 1e-6)]
    [InlineData("deis_o3", 1e-6)]
    [InlineData("lcm", 1e-6)]
    [InlineData("ddpm", 1e-6)]
    [InlineData("ddpm_noclip", 1e-6)]
    [InlineData("ddpm_small_log", 1e-6)]
    [InlineData("ddpm_large", 1e-6)]
    [InlineData("ddpm_learned_range", 1e-6)]
    [InlineData("tcd", 1e-6)]
    [InlineData("ipndm", 1e-6)]
    public void RunsMatchDiffusers(string name, double tolerance)
    {
        double worst = RunAll(name);
        Assert.True(worst <= tolerance, $"{name}: max relative step error {worst:G3} > {tolerance:G3}");
    }
}
