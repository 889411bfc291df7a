using System.Text.Json.Nodes;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Schedulers;

/// <summary>
/// The EDM schedulers against diffusers' own (fixture local-diffusers/edm-schedulers, made by
/// tools/reference/edm_schedulers.py with diffusers 0.36.0 on torch 1.13 CPU): for each short name, three base configs
/// (Playground v2.5's, CosXL's, a sigma_min-final variant) and 1, 4, 10 and 25 steps, the timesteps and sigmas must be
/// equal and every step's sample must match with a synthetic model (<c>0.3 * scale_model_input(x, t) + 0.1 * sin(t)</c>),
/// the SDE variants and Euler's churn drawing from the same seeded generator. Relative error: max |ours - diffusers| /
/// max(1, max |diffusers|) per step. Plus the factory, validation and add_noise rules.
/// </summary>
public sealed class EDMSchedulerTests(ITestOutputHelper output)
{
    private const string Folder = "local-diffusers/edm-schedulers";
    private static readonly Lazy<Dictionary<string, Tensor>> Expected = new(() => Fixtures.Expected($"{Folder}/expected.safetensors"));
    private static readonly Lazy<JsonObject> Meta = new(() => (JsonObject)JsonNode.Parse(File.ReadAllText(Fixtures.Path($"{Folder}/meta.json")))!);

    private double RunAll(string name)
    {
        var cases = ((JsonObject)Meta.Value["cases"]!).Where(c => c.Key.StartsWith(name + ".", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(cases);
        double worst = 0;
        foreach (var (key, node) in cases)
        {
            var meta = (JsonObject)node!;
            var config = (JsonObject)Meta.Value["bases"]![(string)meta["base"]!]!.DeepClone();
            var overrides = ((JsonObject)meta["overrides"]!).ToDictionary(p => p.Key, p => p.Value!.DeepClone());
            using var scheduler = (EDMSchedulerBase)DiffusionSchedulers.FromConfig((string)meta["class"]!, config, overrides);
            var churn = meta["churn"] as JsonObject;
            double err = RunCase(scheduler, key, (int)meta["steps"]!, (long)meta["seed"]!, (double)meta["init_noise_sigma"]!, churn);
            worst = Math.Max(worst, err);
        }
        output.WriteLine($"{name}: {cases.Count} cases, max relative step error {worst:G3}");
        return worst;
    }

    private static double RunCase(EDMSchedulerBase scheduler, string key, int steps, long seed, double initNoiseSigma, JsonObject? churn)
    {
        var e = Expected.Value;
        scheduler.SetTimesteps(steps);
        Assert.Equal(1, scheduler.Order);
        var expectedT = e[$"{key}.timesteps"].data<float>().ToArray();
        Same(expectedT, scheduler.TimestepValues.ToArray(), $"{key}.timesteps");
        Same(e[$"{key}.sigmas"].data<float>().ToArray(), scheduler.SigmaValues.ToArray(), $"{key}.sigmas");
        Assert.Equal(initNoiseSigma, scheduler.InitNoiseSigma);

        using var scope = NewDisposeScope();
        using var generator = new Generator("cpu").ManualSeed(seed);
        var latents = generator.Randn(e[$"{key}.init"].shape, ScalarType.Float32, CPU) * scheduler.InitNoiseSigma;
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(latents, e[$"{key}.init"]));
        double worst = 0;
        for (int i = 0; i < expectedT.Length; i++)
        {
            float t = expectedT[i];
            var input = scheduler.ScaleModelInput(latents, t);
            var modelOutput = 0.3 * input + 0.1 * tensor(t, ScalarType.Float32).sin();
            latents = churn is null
                ? scheduler.Step(modelOutput, t, latents, generator)
                : ((EDMEulerScheduler)scheduler).Step(modelOutput, t, latents, (double)churn["s_churn"]!, (double)churn["s_tmin"]!,
                    (double)churn["s_tmax"]!, 1.0, generator);
            var want = e[$"{key}.step{i}"];
            // NaN where diffusers has NaN (the SDE variants' last step with final sigma_min: sqrt(1 - exp(-2h)) of a
            // slightly negative h, the last Karras sigma being a hair below sigma_min), compared elsewhere.
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
    [InlineData("edm_euler", 1e-6)]
    [InlineData("edm_euler_churn", 1e-6)]
    [InlineData("edm_dpmpp_2m", 1e-6)]
    [InlineData("edm_dpmpp_2m_sde", 1e-6)]
    [InlineData("edm_dpmpp_2m_heun", 1e-6)]
    [InlineData("edm_dpmpp_2m_sde_heun", 1e-6)]
    [InlineData("edm_dpmpp_3m", 1e-6)]
    [InlineData("edm_dpmpp_1", 1e-6)]
    [InlineData("edm_dpmpp_euler_at_final", 1e-6)]
    [InlineData("edm_dpmpp_thresholding", 1e-6)]
    public void RunsMatchDiffusers(string name, double tolerance)
    {
        double worst = RunAll(name);
        Assert.True(worst <= tolerance, $"{name}: max relative step error {worst:G3} > {tolerance:G3}");
    }

    private static JsonObject Playground() => (JsonObject)Meta.Value["bases"]!["playground"]!.DeepClone();

    [Fact]
    public void ClassNamesAndShortNamesBuildTheEdmSchedulers()
    {
        using var dpm = DiffusionSchedulers.FromConfig(Playground());
        Assert.IsType<EDMDPMSolverMultistepScheduler>(dpm);
        using var euler = (EDMEulerScheduler)DiffusionSchedulers.FromName("edm_euler", Playground());
        Assert.Equal(0.5, euler.Config.SigmaData);
        using var sde = (EDMDPMSolverMultistepScheduler)DiffusionSchedulers.FromName("edm_dpmpp_2m_sde", Playground());
        Assert.Equal("sde-dpmsolver++", sde.Algorithm);
        Assert.Contains("EDMEulerScheduler", DiffusionSchedulers.KnownClassNames);
        Assert.Contains("edm_dpmpp_2m", DiffusionSchedulers.KnownNames);
        // init_noise_sigma is sqrt(sigma_max² + 1), before any set_timesteps.
        Assert.Equal(Math.Sqrt(80.0 * 80.0 + 1), dpm.InitNoiseSigma, 12);
        // deis / logrho are taken as dpmsolver++ / midpoint, as diffusers registers them.
        var overrides = new Dictionary<string, JsonNode> { ["algorithm_type"] = "deis", ["solver_type"] = "bh2" };
        using var mapped = (EDMDPMSolverMultistepScheduler)DiffusionSchedulers.FromConfig("EDMDPMSolverMultistepScheduler", Playground(), overrides);
        Assert.Equal(("dpmsolver++", "midpoint"), (mapped.Algorithm, mapped.SolverType));
    }

    [Theory]
    [InlineData("sigma_schedule", "\"linear\"", "sigma_schedule")]
    [InlineData("prediction_type", "\"sample\"", "prediction_type")]
    [InlineData("final_sigmas_type", "\"last\"", "final_sigmas_type")]
    [InlineData("sigma_min", "null", "sigma_min")]
    [InlineData("sigma_max", "0.001", "sigma_min < sigma_max")]
    [InlineData("algorithm_type", "\"dpmsolver\"", "algorithm_type")]
    [InlineData("solver_type", "\"euler\"", "solver_type")]
    [InlineData("solver_order", "4", "solver_order")]
    public void InvalidConfigsAreRefusedAtConstruction(string key, string json, string mentioned)
    {
        var overrides = new Dictionary<string, JsonNode?> { [key] = JsonNode.Parse(json) };
        var config = Playground();
        foreach (var (k, v) in overrides) config[k] = v;
        var e = Assert.Throws<ArgumentException>(() => DiffusionSchedulers.FromConfig(config));
        Assert.Contains(mentioned, e.Message);
    }

    [Fact]
    public void SdeAtOrderThreeIsRefused()
    {
        var config = Playground();
        config["algorithm_type"] = "sde-dpmsolver++";
        config["solver_order"] = 3;
        Assert.Throws<NotSupportedException>(() => DiffusionSchedulers.FromConfig(config));
    }

    [Fact]
    public void AnEulerConfigWithNullSigmasIsRefusedClearly()
    {
        // tiny-sdxl's EulerDiscreteScheduler config saves sigma_min / sigma_max as null: diffusers' EDM schedulers fail on it.
        var euler = SchedulerConfigText.Parse(File.ReadAllText(Fixtures.Path("tiny-sdxl/model/scheduler/scheduler_config.json")));
        var e = Assert.Throws<ArgumentException>(() => DiffusionSchedulers.FromName("edm_euler", euler));
        Assert.Contains("sigma_min", e.Message);
        // Listed as default values (a config diffusers loaded from a file without them), the EDM defaults apply.
        euler["_use_default_values"] = new JsonArray("sigma_min", "sigma_max");
        using var edm = (EDMEulerScheduler)DiffusionSchedulers.FromName("edm_euler", euler);
        Assert.Equal(80.0, edm.Config.SigmaMax);
    }

    [Fact]
    public void StepsNeedTimestepsAndAddNoiseFollowsTheBeginIndex()
    {
        using var scheduler = new EDMEulerScheduler();
        using var x = ones(1, 4, 2, 2);
        Assert.Throws<InvalidOperationException>(() => scheduler.ScaleModelInput(x, 0f));
        scheduler.SetTimesteps(5);
        var t = scheduler.TimestepValues;
        Assert.Throws<ArgumentException>(() => scheduler.AddNoise(x, x, 123f));
        // No begin index: the sigma of the timestep; with one (img2img): the begin index's, whatever the timestep.
        using var noised = scheduler.AddNoise(zeros(1, 4, 2, 2), x, t[2]);
        Assert.Equal(scheduler.SigmaValues[2], noised[0, 0, 0, 0].item<float>());
        scheduler.SetBeginIndex(3);
        using var fromBegin = scheduler.AddNoise(zeros(1, 4, 2, 2), x, t[0]);
        Assert.Equal(scheduler.SigmaValues[3], fromBegin[0, 0, 0, 0].item<float>());
        // scale_model_input at the begin index: c_in = 1 / sqrt(sigma² + sigma_data²).
        using var scaled = scheduler.ScaleModelInput(x, t[3]);
        float sigma = scheduler.SigmaValues[3];
        Assert.Equal(1 / Math.Sqrt(sigma * (double)sigma + 0.25), scaled[0, 0, 0, 0].item<float>(), 5);
        // DPM-Solver takes a timestep not in the schedule as the last step; Euler refuses it.
        using var dpm = new EDMDPMSolverMultistepScheduler();
        dpm.SetTimesteps(5);
        Assert.Equal(4, dpm.IndexForTimestep(123f));
        Assert.Throws<ArgumentException>(() => scheduler.IndexForTimestep(123f));
    }
}
