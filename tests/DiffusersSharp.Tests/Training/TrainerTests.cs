using System.Text.Json.Nodes;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using DiffusersSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Training;

/// <summary>A tiny transformer task (random tiny VAE, real CLIP tokenizers) built the same way for every seed.</summary>
internal sealed class TinyTransformerSetup : IDisposable
{
    public AutoencoderKL Vae { get; }
    public SD3Transformer2DModel Transformer { get; }
    public CLIPTextModelWithProjection TextEncoder { get; }
    public CLIPTextModelWithProjection TextEncoder2 { get; }
    public TransformerTrainingTask Task { get; }

    public TinyTransformerSetup(long seed, int batch = 4, int maxSequenceLength = 8)
    {
        var c = ShapesModelConfigs.Tiny;
        (Vae, Transformer, TextEncoder, TextEncoder2) = ShapesTraining.BuildSeeded(seed, () => (new AutoencoderKL(c.Vae),
            new SD3Transformer2DModel(c.Transformer), new CLIPTextModelWithProjection(c.TextEncoder), new CLIPTextModelWithProjection(c.TextEncoder2)));
        var tok = CLIPTokenizer.FromFolder(Fixtures.Path("tiny-sd3/model/tokenizer"));
        var tok2 = CLIPTokenizer.FromFolder(Fixtures.Path("tiny-sd3/model/tokenizer_2"));
        Task = new TransformerTrainingTask(Transformer, TextEncoder, TextEncoder2, tok, tok2, Vae, c.Scheduler,
            new TransformerTrainingOptions { BatchSize = batch, ImageSize = 16, MaxSequenceLength = maxSequenceLength, CaptionDropout = 0.25, DataSeed = seed });
    }

    public void Dispose()
    {
        Vae.Dispose();
        Transformer.Dispose();
        TextEncoder.Dispose();
        TextEncoder2.Dispose();
    }
}

/// <summary>Always the same batch and noise: for overfitting.</summary>
internal sealed class FixedBatchTask(ITrainingTask inner) : ITrainingTask
{
    public string Stage => inner.Stage;
    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters => inner.TrainableParameters;
    public int BatchSize => inner.BatchSize;
    public Tensor ComputeLoss(long step, torch.Generator generator)
    {
        using var fixedGenerator = new torch.Generator(1234);
        return inner.ComputeLoss(0, fixedGenerator);
    }
    public JsonObject Describe() => inner.Describe();
    public void SetTraining(bool training) => inner.SetTraining(training);
}

[Collection(GlobalRngCollection.Name)]
public class TrainerTests
{
    [Fact]
    public void TrainingOnAFixedBatchReducesTheLoss()
    {
        using var setup = new TinyTransformerSetup(seed: 5);
        var task = new FixedBatchTask(setup.Task);
        using var trainer = new Trainer(task, new TrainerOptions { Steps = 40, Seed = 5, Optimizer = new AdamWOptions { LearningRate = 3e-3 } });
        using var g = new torch.Generator(1);
        float before;
        using (no_grad()) before = task.ComputeLoss(0, g).item<float>();
        trainer.Train();
        float after;
        using (no_grad()) after = task.ComputeLoss(0, g).item<float>();
        Assert.True(after < 0.7 * before, $"loss {before} -> {after} after 40 steps on one batch");
    }

    [Fact]
    public void ResumedRunEqualsTheStraightRun()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ds-resume-" + Guid.NewGuid().ToString("N"));
        try
        {
            var options = new TrainerOptions { Steps = 10, Seed = 9, WarmupSteps = 3, EmaDecay = 0.9, Optimizer = new AdamWOptions { LearningRate = 1e-3 } };
            Dictionary<string, Tensor> straight, straightEma;
            using (var a = new TinyTransformerSetup(seed: 9))
            using (var trainer = new Trainer(a.Task, options))
            {
                trainer.Train();
                straight = a.Task.TrainableParameters.ToDictionary(p => p.Name, p => p.Param.detach().clone());
                straightEma = trainer.EmaWeights.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
            }
            using (var b = new TinyTransformerSetup(seed: 9))
            using (var trainer = new Trainer(b.Task, options with { Steps = 5, CheckpointEvery = 5, CheckpointDir = dir }))
                trainer.Train();
            Assert.True(File.Exists(Path.Combine(dir, "step-000005", "trainer_state.json")));
            // A fresh process: other random weights (another seed), restored from the checkpoint.
            using (var c = new TinyTransformerSetup(seed: 9))
            using (var trainer = new Trainer(c.Task, options))
            {
                using (no_grad()) foreach (var (_, p) in c.Task.TrainableParameters) p.add_(1.0f);
                trainer.Resume(dir);
                Assert.Equal(5, trainer.Step);
                Assert.Equal(5, trainer.Train());
                double worst = 0, worstEma = 0;
                foreach (var (name, p) in c.Task.TrainableParameters)
                {
                    worst = Math.Max(worst, TensorAssert.MaxAbsDiff(p, straight[name]));
                    worstEma = Math.Max(worstEma, TensorAssert.MaxAbsDiff(trainer.EmaWeights[name], straightEma[name]));
                }
                Assert.True(worst <= 1e-6, $"resumed weights differ by {worst}");
                Assert.True(worstEma <= 1e-6, $"resumed EMA differs by {worstEma}");
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ResumeRefusesACheckpointOfAnotherSeed()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ds-resume-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var a = new TinyTransformerSetup(seed: 1))
            using (var trainer = new Trainer(a.Task, new TrainerOptions { Steps = 1, Seed = 1 }))
            {
                trainer.Train();
                trainer.SaveCheckpoint(dir);
            }
            using var b = new TinyTransformerSetup(seed: 2);
            using var other = new Trainer(b.Task, new TrainerOptions { Steps = 2, Seed = 2 });
            var e = Assert.Throws<InvalidDataException>(() => other.Resume(dir));
            Assert.Contains("seed", e.Message);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void CaptionDropoutAndDataAreDeterministicPerStep()
    {
        using var setup = new TinyTransformerSetup(seed: 3, batch: 8);
        var batches = new SceneBatches(3, 8);
        using var g1 = new torch.Generator(Trainer.StepSeed(3, "transformer", 4));
        using var g2 = new torch.Generator(Trainer.StepSeed(3, "transformer", 4));
        var first = setup.Task.Captions(batches.Batch(4), g1);
        batches.Batch(9);
        var again = setup.Task.Captions(batches.Batch(4), g2);
        Assert.Equal(first, again);
        Assert.NotEqual(Trainer.StepSeed(3, "transformer", 4), Trainer.StepSeed(3, "vae", 4));
    }

    [Fact]
    public void LearningRateWarmsUpThenFollowsTheSchedule()
    {
        using var setup = new TinyTransformerSetup(seed: 6);
        var baseOptions = new TrainerOptions { Steps = 111, WarmupSteps = 10, Optimizer = new AdamWOptions { LearningRate = 1e-3 } };
        using (var constant = new Trainer(setup.Task, baseOptions))
        {
            Assert.Equal(1e-4, constant.LearningRateAt(0), 12);
            Assert.Equal(1e-3, constant.LearningRateAt(9), 12);
            Assert.Equal(1e-3, constant.LearningRateAt(110), 12);
        }
        using var cosine = new Trainer(setup.Task, baseOptions with { Schedule = LearningRateSchedule.Cosine, MinLearningRate = 1e-5 });
        Assert.Equal(5e-4, cosine.LearningRateAt(4), 12);
        Assert.Equal(1e-3, cosine.LearningRateAt(10), 12);
        // Half way through the decay (steps 10..110): the mean of peak and floor; the last step reaches the floor.
        Assert.Equal((1e-3 + 1e-5) / 2, cosine.LearningRateAt(60), 12);
        Assert.Equal(1e-5, cosine.LearningRateAt(110), 12);
        for (long step = 11; step <= 110; step++)
            Assert.True(cosine.LearningRateAt(step) < cosine.LearningRateAt(step - 1), $"step {step} does not decay");
        Assert.Throws<ArgumentException>(() => new TrainerOptions { MinLearningRate = 1, Optimizer = new AdamWOptions { LearningRate = 1e-3 } }.Validate());
    }
}
