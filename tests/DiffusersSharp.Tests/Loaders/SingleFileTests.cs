using System.Text.RegularExpressions;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Images;
using DiffusersSharp.Tests.Cli;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Original single-file checkpoints (Stability AI's SD3 layout: MMDiT under model.diffusion_model., LDM VAE under
/// first_stage_model.). No such file of the tiny model exists, so the test writes one from tiny-sd3's diffusers weights
/// in the layout the team's SD3 reference describes (sd3-reference.md, section 1.8: fused qkv, LDM names, reversed
/// decoder blocks, 1x1 convolutions, (shift, scale) halves), then checks that loading it gives back every weight bit for bit.
/// The written file was checked once against diffusers 0.36's own converters (2026-11-27, tools/reference environment):
/// convert_sd3_transformer_checkpoint_to_diffusers and convert_ldm_vae_checkpoint give back tiny-sd3's 85 transformer and
/// 176 VAE tensors bit for bit, so this layout is diffusers' reading of the original one.
/// </summary>
public sealed class SingleFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("single").FullName;
    private static readonly string Model = Fixtures.TinySd3Model;

    public void Dispose() => Directory.Delete(_dir, true);

    private static Dictionary<string, Tensor> Weights(string component)
    {
        using var file = SafetensorsFile.Open(Path.Combine(Model, component, "diffusion_pytorch_model.safetensors"));
        return file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k).clone());
    }

    private static Tensor Swapped(Tensor t) => cat([t.chunk(2)[1], t.chunk(2)[0]], 0);

    /// <summary>The MMDiT in the original layout (written from the reference's table, not from the converter).</summary>
    private static Dictionary<string, Tensor> OriginalTransformer(Dictionary<string, Tensor> d, int layers)
    {
        var o = new Dictionary<string, Tensor>();
        void Put(string key, Tensor t) => o["model.diffusion_model." + key] = t;
        foreach (var (key, t) in d)
        {
            var m = Regex.Match(key, @"^transformer_blocks\.(\d+)\.(.+?)\.(weight|bias)$");
            if (!m.Success)
            {
                string? name = key switch
                {
                    "pos_embed.pos_embed" => "pos_embed",
                    _ when key.StartsWith("pos_embed.proj.") => "x_embedder.proj." + key["pos_embed.proj.".Length..],
                    _ when key.StartsWith("time_text_embed.timestep_embedder.linear_1.") => "t_embedder.mlp.0." + key.Split('.')[^1],
                    _ when key.StartsWith("time_text_embed.timestep_embedder.linear_2.") => "t_embedder.mlp.2." + key.Split('.')[^1],
                    _ when key.StartsWith("time_text_embed.text_embedder.linear_1.") => "y_embedder.mlp.0." + key.Split('.')[^1],
                    _ when key.StartsWith("time_text_embed.text_embedder.linear_2.") => "y_embedder.mlp.2." + key.Split('.')[^1],
                    _ when key.StartsWith("context_embedder.") => key,
                    _ when key.StartsWith("proj_out.") => "final_layer.linear." + key.Split('.')[^1],
                    _ => null,
                };
                if (key.StartsWith("norm_out.linear.")) Put("final_layer.adaLN_modulation.1." + key.Split('.')[^1], Swapped(t));
                else Put(name ?? throw new InvalidOperationException(key), t);
                continue;
            }
            int i = int.Parse(m.Groups[1].Value);
            string part = m.Groups[2].Value, leaf = m.Groups[3].Value, b = $"joint_blocks.{i}.";
            string? Qkv(string attn, string[] names, string target)
            {
                if (!names.Contains(part.Replace(attn + ".", ""))) return null;
                if (part == $"{attn}.{names[0]}")
                    Put(b + target + "." + leaf, cat(names.Select(n => d[$"transformer_blocks.{i}.{attn}.{n}.{leaf}"]).ToArray(), 0));
                return "done";
            }
            if (Qkv("attn", ["to_q", "to_k", "to_v"], "x_block.attn.qkv") is not null) continue;
            if (Qkv("attn", ["add_q_proj", "add_k_proj", "add_v_proj"], "context_block.attn.qkv") is not null) continue;
            if (Qkv("attn2", ["to_q", "to_k", "to_v"], "x_block.attn2.qkv") is not null) continue;
            string target = part switch
            {
                "attn.to_out.0" => "x_block.attn.proj",
                "attn.to_add_out" => "context_block.attn.proj",
                "attn.norm_q" => "x_block.attn.ln_q",
                "attn.norm_k" => "x_block.attn.ln_k",
                "attn.norm_added_q" => "context_block.attn.ln_q",
                "attn.norm_added_k" => "context_block.attn.ln_k",
                "attn2.to_out.0" => "x_block.attn2.proj",
                "attn2.norm_q" => "x_block.attn2.ln_q",
                "attn2.norm_k" => "x_block.attn2.ln_k",
                "norm1.linear" => "x_block.adaLN_modulation.1",
                "norm1_context.linear" => "context_block.adaLN_modulation.1",
                "ff.net.0.proj" => "x_block.mlp.fc1",
                "ff.net.2" => "x_block.mlp.fc2",
                "ff_context.net.0.proj" => "context_block.mlp.fc1",
                "ff_context.net.2" => "context_block.mlp.fc2",
                _ => throw new InvalidOperationException(key),
            };
            // Only the last block's context modulation (an AdaLayerNormContinuous in diffusers) has swapped halves.
            Put(b + target + "." + leaf, part == "norm1_context.linear" && i == layers - 1 ? Swapped(t) : t);
        }
        return o;
    }

    /// <summary>The VAE in the LDM layout.</summary>
    internal static Dictionary<string, Tensor> OriginalVae(Dictionary<string, Tensor> d, int upBlocks)
    {
        var o = new Dictionary<string, Tensor>();
        foreach (var (key, t) in d)
        {
            string k = key.Replace("conv_norm_out", "norm_out").Replace("conv_shortcut", "nin_shortcut")
                .Replace("mid_block.resnets.0", "mid.block_1").Replace("mid_block.resnets.1", "mid.block_2")
                .Replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm").Replace("mid_block.attentions.0.to_q", "mid.attn_1.q")
                .Replace("mid_block.attentions.0.to_k", "mid.attn_1.k").Replace("mid_block.attentions.0.to_v", "mid.attn_1.v")
                .Replace("mid_block.attentions.0.to_out.0", "mid.attn_1.proj_out")
                .Replace("downsamplers.0.conv", "downsample.conv").Replace("upsamplers.0.conv", "upsample.conv");
            k = Regex.Replace(k, @"down_blocks\.(\d+)\.resnets\.", m => $"down.{m.Groups[1].Value}.block.");
            k = Regex.Replace(k, @"down_blocks\.(\d+)\.", m => $"down.{m.Groups[1].Value}.");
            k = Regex.Replace(k, @"up_blocks\.(\d+)\.resnets\.", m => $"up.{upBlocks - 1 - int.Parse(m.Groups[1].Value)}.block.");
            k = Regex.Replace(k, @"up_blocks\.(\d+)\.", m => $"up.{upBlocks - 1 - int.Parse(m.Groups[1].Value)}.");
            bool conv1x1 = k.Contains("mid.attn_1.") && k.EndsWith(".weight") && !k.Contains(".norm.");
            o["first_stage_model." + k] = conv1x1 ? t.reshape(t.shape[0], t.shape[1], 1, 1) : t;
        }
        return o;
    }

    private string WriteOriginal()
    {
        var transformer = Weights("transformer");
        var vae = Weights("vae");
        var all = OriginalTransformer(transformer, 2).Concat(OriginalVae(vae, 4)).ToDictionary();
        string path = Path.Combine(_dir, "sd3_tiny.safetensors");
        SafetensorsWriter.Save(path, all);
        return path;
    }

    [Fact]
    public void TheTransformerOfAnOriginalFileLoadsToTheSameWeightsAndItsConfigIsReadFromTheKeys()
    {
        string path = WriteOriginal();
        using var reference = SD3Transformer2DModel.FromPretrained(Path.Combine(Model, "transformer"));
        // With the folder's config (the tiny model has 4 heads for 2 layers, the original models as many heads as layers).
        using var loaded = SD3Transformer2DModel.FromSingleFile(path, reference.Config);
        var expected = reference.state_dict();
        var actual = loaded.state_dict();
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        Assert.All(expected, kv => Assert.True(kv.Value.equal(actual[kv.Key]).all().item<bool>(), kv.Key));

        using var file = SafetensorsFile.Open(path);
        var inferred = SingleFileConversion.InferSD3TransformerConfig(file);
        var c = reference.Config;
        Assert.Equal((c.NumLayers, c.CaptionProjectionDim, c.JointAttentionDim, c.PooledProjectionDim, c.PatchSize, c.InChannels, c.PosEmbedMaxSize, c.QkNorm),
            (inferred.NumLayers, inferred.CaptionProjectionDim, inferred.JointAttentionDim, inferred.PooledProjectionDim, inferred.PatchSize, inferred.InChannels, inferred.PosEmbedMaxSize, inferred.QkNorm));
        Assert.Equal(c.DualAttentionLayers, inferred.DualAttentionLayers);
        Assert.Equal(inferred.NumLayers, inferred.NumAttentionHeads);
    }

    [Fact]
    public void TheVaeOfAnOriginalFileLoadsToTheSameWeights()
    {
        string path = WriteOriginal();
        using var reference = AutoencoderKL.FromPretrained(Path.Combine(Model, "vae"));
        using var loaded = AutoencoderKL.FromSingleFile(path, reference.Config);
        var expected = reference.state_dict();
        var actual = loaded.state_dict();
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        Assert.All(expected, kv => Assert.True(kv.Value.equal(actual[kv.Key]).all().item<bool>(), kv.Key));
    }

    [Fact]
    public void APipelineFolderWithoutTheReplacedWeightsGeneratesFromTheSingleFile()
    {
        string path = WriteOriginal();
        // tiny-sd3 without the transformer and VAE weights, which the single file brings.
        string folder = Path.Combine(_dir, "model");
        foreach (var file in Directory.GetFiles(Model, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(Model, file);
            if (relative is "transformer/diffusion_pytorch_model.safetensors" or "vae/diffusion_pytorch_model.safetensors") continue;
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(folder, relative))!);
            File.Copy(file, Path.Combine(folder, relative));
        }
        Tensor Latents(string model, string? single)
        {
            using var components = StableDiffusion3Components.FromPretrained(model, new PipelineLoadOptions { SingleFile = single, LoadTextEncoder3 = false });
            using var pipe = new StableDiffusion3Pipeline(components);
            using var g = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5);
            using var result = pipe.Generate(new StableDiffusion3Request
            {
                Prompt = "a teddy bear", NumInferenceSteps = 2, Height = 32, Width = 32, MaxSequenceLength = 8, Generator = g, OutputType = OutputType.Latent,
            });
            return result.Tensor!.clone();
        }
        using var fromFile = Latents(folder, path);
        using var plain = Latents(Model, null);
        Assert.True(fromFile.equal(plain).all().item<bool>());

        // The CLI's --single-file: the same image as the complete folder's.
        string[] Args(string model, string output) => ["generate", "--model", model, "--prompt", "a teddy bear", "--steps", "2", "--width", "32",
            "--height", "32", "--seed", "5", "--no-t5", "--output", Path.Combine(_dir, output)];
        var withFile = CliRunner.Run([.. Args(folder, "a.png"), "--single-file", path]);
        Assert.True(withFile.Code == 0, withFile.Err);
        Assert.Equal(0, CliRunner.Run(Args(Model, "b.png")).Code);
        Assert.Equal(ImageFile.Load(Path.Combine(_dir, "b.png")).Pixels, ImageFile.Load(Path.Combine(_dir, "a.png")).Pixels);
        var sd15 = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "x", "--single-file", path, "--output", Path.Combine(_dir, "c.png"));
        Assert.Equal(2, sd15.Code);
        Assert.Contains("is an original SD3 / SD3.5 (MMDiT) checkpoint", sd15.Err);
    }

    [Fact]
    public void FilesOfAnotherLayoutAreClearErrors()
    {
        var transformer = Weights("transformer");
        var original = OriginalTransformer(transformer, 2);
        original["model.diffusion_model.joint_blocks.0.x_block.bogus.weight"] = zeros(2);
        string bogus = Path.Combine(_dir, "bogus.safetensors");
        SafetensorsWriter.Save(bogus, original);
        Assert.Contains("x_block.bogus", Assert.Throws<InvalidDataException>(() => SD3Transformer2DModel.FromSingleFile(bogus)).Message);
        string vaeOnly = Path.Combine(_dir, "vae-only.safetensors");
        SafetensorsWriter.Save(vaeOnly, OriginalVae(Weights("vae"), 4));
        Assert.Contains("no SD3 MMDiT", Assert.Throws<InvalidDataException>(() => SD3Transformer2DModel.FromSingleFile(vaeOnly)).Message);
        Assert.Throws<FileNotFoundException>(() => SD3Transformer2DModel.FromSingleFile(Path.Combine(_dir, "none.safetensors")));
    }
}
