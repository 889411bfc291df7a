using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>diffusers info</c>: sizes from headers, from configs alone (built on meta), and errors.</summary>
public sealed class InfoCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("info").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static long Count(string key) => (long)JsonNode.Parse(File.ReadAllText(Fixtures.Path("image-ops/meta.json")))!["parameter_counts"]![key]!;

    [Fact]
    public void DescribesEveryComponentOfTheTinyModelFromItsHeaders()
    {
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", Fixtures.TinySd3Model);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("StableDiffusion3Pipeline", (string?)json["pipeline"]);
        var components = json["components"]!.AsObject();
        Assert.Equal(["scheduler", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3", "transformer", "vae"],
            components.Select(c => c.Key).Order(StringComparer.Ordinal));
        foreach (var name in new[] { "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3" })
        {
            var c = components[name]!;
            Assert.Equal("safetensors", (string?)c["source"]);
            Assert.Equal("F32", (string?)c["dtypes"]![0]);
            var folder = Path.Combine(Fixtures.TinySd3Model, name);
            var header = SafetensorsHeader.Read(WeightFiles.FindFiles(folder)![0]);
            Assert.Equal(header.Tensors.Count, (long)c["tensors"]!);
            Assert.Equal(header.Tensors.Values.Sum(t => t.ElementCount), (long)c["parameters"]!);
        }
        Assert.Equal("SD3Transformer2DModel", (string?)components["transformer"]!["class"]);
        Assert.Equal("files", (string?)components["tokenizer"]!["source"]);
    }

    [Theory]
    [InlineData("transformer", "SD3Transformer2DModel", """{"_class_name":"SD3Transformer2DModel","sample_size":128,"patch_size":2,"in_channels":16,"num_layers":24,"attention_head_dim":64,"num_attention_heads":24,"joint_attention_dim":4096,"caption_projection_dim":1536,"pooled_projection_dim":2048,"out_channels":16,"pos_embed_max_size":384,"dual_attention_layers":[0,1,2,3,4,5,6,7,8,9,10,11,12],"qk_norm":"rms_norm"}""", "transformer.sd3.5-medium")]
    [InlineData("vae", "AutoencoderKL", """{"_class_name":"AutoencoderKL","in_channels":3,"out_channels":3,"latent_channels":16,"block_out_channels":[128,256,512,512],"down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],"up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"],"layers_per_block":2,"norm_num_groups":32,"act_fn":"silu","sample_size":1024,"scaling_factor":1.5305,"shift_factor":0.0609,"use_quant_conv":false,"use_post_quant_conv":false,"mid_block_add_attention":true}""", "vae.sd3")]
    public void CountsAFullSizeComponentFromItsConfigAloneBeforeAnyDownload(string component, string cls, string config, string countsKey)
    {
        string model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(Path.Combine(model, component));
        File.WriteAllText(Path.Combine(model, component, "config.json"), config);
        File.WriteAllText(Path.Combine(model, "model_index.json"), $$"""{"_class_name":"StableDiffusion3Pipeline","{{component}}":["diffusers","{{cls}}"]}""");
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", model);
        Assert.True(code == 0, stderr);
        var c = JsonNode.Parse(stdout)!["components"]![component]!;
        Assert.Equal("config", (string?)c["source"]);
        Assert.Equal(Count(countsKey), (long)c["parameters"]!);
        Assert.Equal(Count(countsKey + ".keys"), (long)c["tensors"]!);
    }

    [Fact]
    public void AMalformedFileExitsWith2AndAOneLineReason()
    {
        string file = Path.Combine(_dir, "bad.safetensors");
        File.WriteAllBytes(file, [255, 255, 255, 255, 255, 255, 255, 127, 0]);
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", file);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains("exceeds", Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public void AnUnknownComponentClassIsNamed()
    {
        string model = Path.Combine(_dir, "m");
        Directory.CreateDirectory(Path.Combine(model, "unet"));
        File.WriteAllText(Path.Combine(model, "model_index.json"), """{"_class_name":"StableDiffusionPipeline","unet":["diffusers","UNetSpatioTemporalConditionModel"]}""");
        var (code, _, stderr) = CliRunner.Run("info", "--model", model);
        Assert.Equal(2, code);
        Assert.Contains("'unet' has class 'UNetSpatioTemporalConditionModel'", stderr);
    }

    [Fact]
    public void TheSafetyCheckerAndItsFeatureExtractorAreLeftOut()
    {
        // stable-diffusion-v1-5 names both; DiffusersSharp neither downloads nor loads them (safety_checker=None).
        string model = Path.Combine(_dir, "sd15");
        Directory.CreateDirectory(Path.Combine(model, "scheduler"));
        File.Copy(Fixtures.Path("tiny-sd15/model/scheduler/scheduler_config.json"), Path.Combine(model, "scheduler", "scheduler_config.json"));
        File.WriteAllText(Path.Combine(model, "model_index.json"), """
            {"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"], "feature_extractor": ["transformers", "CLIPImageProcessor"]}
            """);
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", model);
        Assert.True(code == 0, stderr);
        Assert.Contains("PNDMScheduler", stdout);
        Assert.DoesNotContain("safety_checker", stdout);
    }
}
