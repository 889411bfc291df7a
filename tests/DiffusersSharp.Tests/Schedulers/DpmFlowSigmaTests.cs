using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Schedulers;

/// <summary>
/// DPMSolverMultistepScheduler with flow sigmas (Sana's scheduler) against diffusers v0.39.0's own (fixture
/// local-diffusers/dpm-flow, tools/reference/dpm_flow.py): Sana's config and three variants (shift 1 with order 3,
/// sde-dpmsolver++ with heun, final sigma_min without lower_order_final) at 1, 4, 10, 20 and 25 steps: equal timesteps
/// and sigmas, every step of a sampling run with a synthetic model (<c>0.3 * x + 0.1 * sin(t / 100)</c>, the SDE drawing
/// from the same seeded generator), and add_noise at the second timestep. Relative error as SchedulerRunParityTests
/// measures it: max |ours - diffusers| / max(1, max |diffusers|) per step.
/// </summary>
public sealed class DpmFlowSigmaTests(ITestOutputHelper output)
{
    private const string Folder = "local-diffusers/dpm-flow";
    private static readonly Lazy<Dictionary<string, Tensor>> Expected = new(() => Fixtures.Expected($"{Folder}/expected.safetensors"));
    private static readonly Lazy<JsonObject> Meta = new(() => (JsonObject)JsonNode.Parse(File.ReadAllText(Fixtures.Path($"{Folder}/meta.json")))!);

    private static DPMSolverMultistepScheduler Create(string config) =>
        new(ConfigJson.Parse<DPMSolverMultistepSchedulerConfig>(Meta.Value["configs"]![config]!.ToJsonString()));

    [Theory]
    [InlineData("sana")]
    [InlineData("shift1_order3")]
    [InlineData("sde_heun")]
    [InlineData("sigma_min_no_lof")]
    public void SchedulesAndRunsMatchDiffusers(string config)
    {
        var e = Expected.Value;
        double worst = 0;
        foreach (var stepsNode in Meta.Value["steps"]!.AsArray())
        {
            int steps = (int)stepsNode!;
            string key = $"{config}/{steps}";
            using var scope = NewDisposeScope();
            using var scheduler = Create(config);
            scheduler.SetTimesteps(steps);
            var expectedT = e[$"{key}/timesteps"].to(ScalarType.Float32).data<float>().ToArray();
            Assert.Equal(expectedT, scheduler.TimestepValues.ToArray());
            Assert.Equal(e[$"{key}/sigmas"].data<float>().ToArray(), scheduler.SigmaValues.ToArray());

            using var generator = new Generator("cpu").ManualSeed(1234 + steps);
            var latents = generator.Randn(e[$"{key}/initial"].shape, ScalarType.Float32, CPU);
            Assert.Equal(0, TensorAssert.MaxAbsDiff(latents, e[$"{key}/initial"]));
            for (int i = 0; i < expectedT.Length; i++)
            {
                float t = expectedT[i];
                var modelOutput = 0.3 * scheduler.ScaleModelInput(latents, t) + 0.1 * Math.Sin(t / 100.0);
                latents = scheduler.Step(modelOutput, t, latents, generator);
                var want = e[$"{key}/step{i}"];
                double err = TensorAssert.MaxAbsDiff(latents, want) / Math.Max(1.0, want.abs().max().item<float>());
                worst = Math.Max(worst, err);
            }

            if (steps > 1)
            {
                using var fresh = Create(config);
                fresh.SetTimesteps(steps);
                var noisy = fresh.AddNoise(e[$"{key}/add_noise_x0"], e[$"{key}/add_noise_noise"], fresh.TimestepValues[1]);
                var want = e[$"{key}/add_noise"];
                worst = Math.Max(worst, TensorAssert.MaxAbsDiff(noisy, want) / Math.Max(1.0, want.abs().max().item<float>()));
            }
        }
        output.WriteLine($"{config}: max relative step error {worst:G3}");
        Assert.True(worst <= 1e-6, $"{config}: max relative error {worst:G3} > 1e-6");
    }

    [Fact]
    public void RefusesWhatItDoesNotRun()
    {
        Assert.Throws<NotSupportedException>(() => new UniPCMultistepScheduler(new UniPCMultistepSchedulerConfig { UseFlowSigmas = true }));
        Assert.Throws<ArgumentException>(() => new DPMSolverMultistepScheduler(new DPMSolverMultistepSchedulerConfig { UseFlowSigmas = true, UseKarrasSigmas = true }));
        Assert.Throws<ArgumentException>(() => new DPMSolverMultistepScheduler(new DPMSolverMultistepSchedulerConfig { UseFlowSigmas = true, FlowShift = 0 }));
        Assert.Throws<NotSupportedException>(() => new DPMSolverMultistepScheduler(new DPMSolverMultistepSchedulerConfig { UseFlowSigmas = true, UseDynamicShifting = true }));
    }
}
