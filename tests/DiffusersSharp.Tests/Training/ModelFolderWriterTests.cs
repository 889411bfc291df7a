using System.Text.Json;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tests.Cli;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Training;
using DiffusersSharp.Training.Shapes;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Training;

[Collection(GlobalRngCollection.Name)]
public class ModelFolderWriterTests
{
    private static string Temp() => Path.Combine(Path.GetTempPath(), "ds-train-" + Guid.NewGuid().ToString("N"));

    private static string Json<T>(T config) => JsonSerializer.Serialize(config, ConfigJson.Options);

    [Fact]
    public void TinyStagesWriteAPipelineFolderThatLoadsAndGenerates()
    {
        string dir = Temp();
        try
        {
            var c = ShapesModelConfigs.Tiny;
            var vae = ShapesTraining.TrainVae(dir, c, new TrainerOptions { Steps = 2, Seed = 1 }, new VaeTrainingOptions { BatchSize = 2, ImageSize = 16 });
            Assert.Equal(2, vae.StepsRun);
            var tr = ShapesTraining.TrainTransformer(dir, c, new TrainerOptions { Steps = 2, Seed = 1 },
                new TransformerTrainingOptions { BatchSize = 2, ImageSize = 16 }, Fixtures.TinySd3Model);
            Assert.True(double.IsFinite(tr.LastLoss));

            // Configs read back into equal records (plus the class markers).
            Assert.Equal(Json(c.Transformer), Json(ConfigJson.Read<SD3Transformer2DModelConfig>(Path.Combine(dir, "transformer/config.json"))));
            Assert.Equal(Json(c.TextEncoder2), Json(ConfigJson.Read<CLIPTextConfig>(Path.Combine(dir, "text_encoder_2/config.json"))));
            Assert.Equal(Json(c.Scheduler), Json(ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(dir, "scheduler/scheduler_config.json"))));
            var vaeConfig = ConfigJson.Read<AutoencoderKLConfig>(Path.Combine(dir, "vae/config.json"));
            Assert.NotEqual(1.0, vaeConfig.ScalingFactor); // measured from the latents
            Assert.Equal(Json(c.Vae with { ScalingFactor = vaeConfig.ScalingFactor, ShiftFactor = vaeConfig.ShiftFactor }), Json(vaeConfig));
            using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "transformer/config.json"))))
                Assert.Equal("SD3Transformer2DModel", doc.RootElement.GetProperty("_class_name").GetString());
            var index = ModelIndex.Read(dir);
            Assert.Equal("StableDiffusion3Pipeline", index.ClassName);
            Assert.True(index.Components["text_encoder_3"].IsEmpty);
            Assert.False(File.Exists(Path.Combine(dir, "tokenizer_2/tokenizer.json")));
            using (var weights = SafetensorsFile.Open(Path.Combine(dir, "transformer/diffusion_pytorch_model.safetensors")))
                Assert.All(weights.Tensors.Values, t => Assert.Equal(SafetensorsDtype.F16, t.Dtype));

            using var pipe = StableDiffusion3Pipeline.FromPretrained(dir);
            Assert.Equal(ScalarType.Float32, pipe.Components.Transformer.Dtype);
            using var outImages = pipe.Generate(new StableDiffusion3Request
            {
                Prompt = "a red circle on a blue background", Height = 16, Width = 16, NumInferenceSteps = 2,
                Generator = new DiffusersSharp.Runtime.Generator().ManualSeed(0),
            });
            Assert.Equal(16, outImages.Images![0].Width);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void TrainVerbWritesAFolderAndRejectsBadOptions()
    {
        string dir = Temp();
        try
        {
            var (code, stdout, stderr) = CliRunner.Run("train", "--output", dir, "--preset", "tiny", "--vae-steps", "2", "--steps", "3",
                "--batch-size", "2", "--vae-batch-size", "2", "--checkpoint-every", "2", "--log-every", "1", "--tokenizers", Fixtures.TinySd3Model);
            Assert.True(code == 0, stderr);
            Assert.Contains("transformer step 3/3 loss", stderr);
            Assert.Contains("\"stage\": \"transformer\"", stdout);
            Assert.True(File.Exists(Path.Combine(dir, "model_index.json")));
            Assert.True(Directory.Exists(Path.Combine(dir + "-checkpoints", "transformer", "step-000003")));

            var (resumeCode, _, resumeErr) = CliRunner.Run("train", "--output", dir, "--preset", "tiny", "--stage", "transformer", "--steps", "4",
                "--batch-size", "2", "--checkpoint-every", "0", "--resume", Path.Combine(dir + "-checkpoints", "transformer"), "--tokenizers", Fixtures.TinySd3Model);
            Assert.True(resumeCode == 0, resumeErr);
            Assert.Contains("transformer step 4/4", resumeErr);

            // Fine-tuning starts from the written weights (a new run: fresh optimizer, its own schedule) at another shift,
            // into a new folder that takes the init folder's VAE.
            string tuned = dir + "-tuned";
            var (tuneCode, tuneOut, tuneErr) = CliRunner.Run("train", "--output", tuned, "--preset", "tiny", "--stage", "transformer", "--steps", "2",
                "--batch-size", "2", "--checkpoint-every", "0", "--init-from", dir, "--shift", "2.5", "--lr-schedule", "cosine",
                "--weighting-scheme", "logit_normal", "--logit-mean", "-0.5", "--tokenizers", Fixtures.TinySd3Model);
            Assert.True(tuneCode == 0, tuneErr);
            Assert.Contains("transformer step 2/2", tuneErr);
            Assert.Contains("\"shift\": 2.5", File.ReadAllText(Path.Combine(tuned, "scheduler", "scheduler_config.json")));
            foreach (var name in new[] { "config.json", "diffusion_pytorch_model.safetensors" })
                Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "vae", name)), File.ReadAllBytes(Path.Combine(tuned, "vae", name)));
            Directory.Delete(tuned, recursive: true);
            if (Directory.Exists(tuned + "-checkpoints")) Directory.Delete(tuned + "-checkpoints", recursive: true);
            Assert.Equal(2, CliRunner.Run("train", "--output", tuned, "--stage", "transformer", "--init-from", tuned).Code);
            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--shift", "0").Code);
            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--lr-schedule", "step").Code);
            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--min-lr", "1").Code);
            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--weighting-scheme", "logit-normal").Code);
            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--logit-std", "0").Code);

            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--stage", "unet").Code);
            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--lr", "fast").Code);
            Assert.Equal(2, CliRunner.Run("train", "--output", dir, "--resume", dir).Code);
        }
        finally
        {
            foreach (var folder in new[] { dir, dir + "-checkpoints", dir + "-tuned", dir + "-tuned-checkpoints" })
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}

public class CheckShapesCliTests
{
    [Fact]
    public void CheckShapesReportsRatesAsJson()
    {
        var (code, stdout, stderr) = CliRunner.Run("check-shapes", "--model", Fixtures.TinySd3Model, "--count", "2", "--steps", "1",
            "--guidance", "1");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(2, doc.RootElement.GetProperty("count").GetInt32());
        Assert.Equal("held-out", doc.RootElement.GetProperty("split").GetString());
        Assert.StartsWith("000 ", stderr.Split('\n').First(l => l.StartsWith("000")));
        Assert.Equal(2, CliRunner.Run("check-shapes", "--model", Fixtures.TinySd3Model, "--split", "test").Code);
    }

    [Theory]
    [InlineData("negative", null)]
    [InlineData("img2img", "0.8")]
    [InlineData("inpaint", "1")]
    public void CheckShapesRunsEveryModeAndCountsWhatItMovesAwayFrom(string mode, string? strength)
    {
        var args = new List<string> { "check-shapes", "--model", Fixtures.TinySd3Model, "--count", "2", "--steps", "2", "--guidance", "2", "--mode", mode };
        if (strength is not null) args.AddRange(["--strength", strength]);
        var (code, stdout, stderr) = CliRunner.Run([.. args]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(mode, doc.RootElement.GetProperty("mode").GetString());
        int avoided = doc.RootElement.GetProperty("avoided").GetInt32();
        Assert.InRange(avoided, 0, 2);
        string first = stderr.Split('\n').First(l => l.StartsWith("000"));
        Assert.Contains(mode == "negative" ? " not \"a " : " from \"a ", first);
    }

    [Fact]
    public void CheckShapesRejectsBadModesAndStrengths()
    {
        Assert.Equal(2, CliRunner.Run("check-shapes", "--model", Fixtures.TinySd3Model, "--mode", "video").Code);
        Assert.Equal(2, CliRunner.Run("check-shapes", "--model", Fixtures.TinySd3Model, "--mode", "img2img", "--strength", "1.5").Code);
    }

    [Fact]
    public void SourceScenesChangeOneAttributeAndKeepTheGeometry()
    {
        var scene = new SceneSpec(new SceneDescription(SceneColor.Purple, ShapeKind.Triangle, SceneColor.Black, ScenePosition.TopLeft), 0.3f, 0.25f, 0.25f);
        var recoloured = ShapesEvaluation.Recoloured(scene);
        // Purple is last in the palette; black (the background) is skipped.
        Assert.Equal("a red triangle on a black background, top left", recoloured.Caption);
        Assert.Equal((scene.Size, scene.CenterX, scene.CenterY), (recoloured.Size, recoloured.CenterX, recoloured.CenterY));
        Assert.Equal("a purple circle on a black background, top left", ShapesEvaluation.Reshaped(scene).Caption);
        Assert.Equal(ShapeKind.Square, ShapesEvaluation.OtherShape(new SceneDescription(SceneColor.Red, ShapeKind.Circle, SceneColor.Blue)).Shape);
        var onRed = new SceneSpec(new SceneDescription(SceneColor.White, ShapeKind.Square, SceneColor.Black), 0.3f, 0.5f, 0.5f);
        Assert.Equal(SceneColor.Orange, ShapesEvaluation.Recoloured(onRed).ShapeColor);
    }
}
