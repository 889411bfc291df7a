using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Schedulers;

/// <summary>Timesteps and sigmas against diffusers' own (tiny-sd15/schedulers.json), built from the pipelines' scheduler configs.</summary>
public class UNetSchedulerScheduleTests
{
    public static TheoryData<string> SchedulerKeys => new() { "pndm", "ddim", "euler", "euler_a", "lms", "dpmpp_2m_karras" };

    internal static JsonObject CaseConfig(string key)
    {
        var meta = SchedulerConfigText.Parse(File.ReadAllText(Fixtures.Path("tiny-sd15/meta.json")));
        return meta["cases"]![$"t2i_{key}"]!["scheduler_config"]!.AsObject();
    }

    private static void AssertBitEqual(float[] expected, IReadOnlyList<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Count);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    [Theory]
    [MemberData(nameof(SchedulerKeys))]
    public void MatchesDiffusersTimestepsAndSigmasBitForBit(string key)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("tiny-sd15/schedulers.json")));
        var cases = doc.RootElement.GetProperty(key);
        using var scheduler = DiffusionSchedulers.FromConfig(CaseConfig(key));
        Assert.Equal((string)CaseConfig(key)["_class_name"]!, scheduler.ClassName);
        int checkedCount = 0;
        foreach (var c in cases.EnumerateObject())
        {
            int n = int.Parse(c.Name);
            scheduler.SetTimesteps(n);
            float[] Read(string name) => c.Value.GetProperty(name).EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();
            AssertBitEqual(Read("timesteps"), scheduler.TimestepValues, $"{key} N={n} timesteps");
            if (c.Value.TryGetProperty("sigmas", out _))
                AssertBitEqual(Read("sigmas"), ((SigmaSchedulerBase)scheduler).SigmaValues, $"{key} N={n} sigmas");
            Assert.Equal(n, scheduler.NumInferenceSteps);
            checkedCount++;
        }
        Assert.Equal(5, checkedCount);
    }

    [Fact]
    public void TimestepTensorsHaveDiffusersDtypes()
    {
        using var pndm = (PNDMScheduler)DiffusionSchedulers.FromConfig(CaseConfig("pndm"));
        using var euler = (EulerDiscreteScheduler)DiffusionSchedulers.FromConfig(CaseConfig("euler"));
        using var dpm = (DPMSolverMultistepScheduler)DiffusionSchedulers.FromConfig(CaseConfig("dpmpp_2m_karras"));
        pndm.SetTimesteps(4);
        euler.SetTimesteps(4);
        dpm.SetTimesteps(4);
        Assert.Equal(ScalarType.Int64, pndm.Timesteps.dtype);
        Assert.Equal(new long[] { 751, 501, 501, 251, 1 }, pndm.Timesteps.data<long>().ToArray());
        Assert.Equal(ScalarType.Float32, euler.Timesteps.dtype);
        Assert.Equal(ScalarType.Int64, dpm.Timesteps.dtype);
        Assert.Equal(new long[] { 999, 687, 146, 0 }, dpm.Timesteps.data<long>().ToArray());
        Assert.Equal(5, euler.Sigmas.shape[0]);
    }

    [Fact]
    public void InitNoiseSigmaFollowsTheSpacing()
    {
        using var euler = (EulerDiscreteScheduler)DiffusionSchedulers.FromConfig(CaseConfig("euler"));
        euler.SetTimesteps(10);
        Assert.Equal(euler.SigmaValues[0], (float)euler.InitNoiseSigma);
        using var leading = new EulerDiscreteScheduler(new EulerDiscreteSchedulerConfig
        {
            BetaSchedule = "scaled_linear", BetaStart = 0.00085, BetaEnd = 0.012, TimestepSpacing = "leading", StepsOffset = 1,
        });
        leading.SetTimesteps(10);
        float max = leading.SigmaValues.Max();
        Assert.Equal(MathF.Sqrt(max * max + 1f), (float)leading.InitNoiseSigma);
        Assert.Equal(901f, leading.TimestepValues[0]);
        using var ddim = DiffusionSchedulers.FromConfig(CaseConfig("ddim"));
        Assert.Equal(1.0, ddim.InitNoiseSigma);
    }

    [Fact]
    public void TrailingAndLinspaceSpacingsFollowNumpy()
    {
        var cfg = new DDIMSchedulerConfig { TimestepSpacing = "trailing" };
        using var trailing = new DDIMScheduler(cfg);
        trailing.SetTimesteps(3);
        // np.round(np.arange(1000, 0, -333.33)) - 1
        Assert.Equal(new float[] { 999, 666, 332 }, trailing.TimestepValues.ToArray());
        using var lin = new DDIMScheduler(cfg with { TimestepSpacing = "linspace" });
        lin.SetTimesteps(4);
        Assert.Equal(new float[] { 999, 666, 333, 0 }, lin.TimestepValues.ToArray());
        using var eulerTrailing = new EulerDiscreteScheduler(new EulerDiscreteSchedulerConfig { TimestepSpacing = "trailing" });
        eulerTrailing.SetTimesteps(3);
        Assert.Equal(new float[] { 999, 666, 332 }, eulerTrailing.TimestepValues.ToArray());
    }

    [Fact]
    public void PrkWarmUpHasTwelveRungeKuttaTimesteps()
    {
        using var pndm = new PNDMScheduler(new PNDMSchedulerConfig { StepsOffset = 1 });
        pndm.SetTimesteps(10);
        // _timesteps = 1, 101, ..., 901; the last four (601..901) with their midpoints (+50): [601, 651, ..., 951][:-1]
        // repeated twice, [1:-1], reversed.
        Assert.Equal(new float[] { 901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601 }, pndm.TimestepValues.Take(12).ToArray());
        Assert.Equal(new float[] { 601, 501, 401, 301, 201, 101, 1 }, pndm.TimestepValues.Skip(12).ToArray());
    }
}
