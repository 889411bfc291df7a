using DiffusersSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Training;

public class OptimizerTests
{
    [Fact]
    public void AdamWStepsEqualTorchSharpsAdamW()
    {
        using var init = randn([5, 3], generator: new torch.Generator(1));
        var ours = new Parameter(init.clone());
        var reference = new Parameter(init.clone());
        var options = new AdamWOptions { LearningRate = 0.01, WeightDecay = 0.1 };
        using var adam = new DiffusersSharp.Training.AdamW([("w", ours)], options);
        using var torchAdam = optim.AdamW([reference], lr: 0.01, weight_decay: 0.1);
        for (int step = 0; step < 4; step++)
        {
            using var target = randn([5, 3], generator: new torch.Generator((ulong)(10 + step)));
            adam.ZeroGrad();
            using (var loss = (ours * ours * target).sum()) loss.backward();
            adam.Step();
            torchAdam.zero_grad();
            using (var loss = (reference * reference * target).sum()) loss.backward();
            torchAdam.step();
        }
        double diff = Support.TensorAssert.MaxAbsDiff(ours, reference);
        Assert.True(diff < 1e-6, $"max |ours - torch AdamW| = {diff}");
        Assert.True(Support.TensorAssert.MaxAbsDiff(ours, init) > 1e-3, "the parameter did not move");
    }

    [Fact]
    public void EmaUsesTheWarmUpDecay()
    {
        var p = new Parameter(zeros(2));
        using var ema = new ExponentialMovingAverage([("p", p)], decay: 0.5);
        Assert.Equal(2.0 / 11.0, ema.DecayAt(1), 12);
        Assert.Equal(0.5, ema.DecayAt(100), 12);
        using (no_grad()) p.fill_(1.0f);
        ema.Update(1); // decay 2/11: shadow = 0 + (1 - 2/11)(1 - 0)
        Assert.Equal(9.0 / 11.0, ema.Weights()["p"][0].item<float>(), 6);
        ema.Update(100); // decay 0.5
        Assert.Equal(9.0 / 11.0 + 0.5 * (1 - 9.0 / 11.0), ema.Weights()["p"][1].item<float>(), 6);
    }
}
