using DiffusersSharp.Training.Shapes;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Training;

public sealed class SceneTensorsTests
{
    [Fact]
    public void DrawsABatchAsNchwInMinusOneToOne()
    {
        var scenes = ShapeScenes.TrainingScenes(1).Take(3).ToArray();
        using var batch = SceneTensors.Draw(scenes, 64);
        Assert.Equal(new long[] { 3, 3, 64, 64 }, batch.shape);
        Assert.Equal(ScalarType.Float32, batch.dtype);
        var image = ShapeScenes.Draw(scenes[1], 64);
        for (int ch = 0; ch < 3; ch++)
            foreach (var (x, y) in new[] { (0, 0), (63, 17), (32, 32), (10, 50) })
            {
                float expected = image.Pixels[3 * (y * 64 + x) + ch] / 255f * 2f - 1f;
                Assert.Equal(expected, batch[1, ch, y, x].item<float>(), 1e-6f);
            }
        Assert.InRange(batch.min().item<float>(), -1f, 1f);
        Assert.InRange(batch.max().item<float>(), -1f, 1f);
        Assert.Throws<ArgumentException>(() => SceneTensors.Draw([], 64));
    }
}
