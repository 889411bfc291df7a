using DiffusersSharp.Benchmarks;
using DiffusersSharp.Images;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Model CPU offload on the CPU (execution device = CPU, so every move is a no-op copy-wise): the outputs must equal the
/// plain run bit for bit and the models must move in diffusers' model_cpu_offload_seq order, one at a time.
/// </summary>
public sealed class ModelOffloadTests
{
    private static StableDiffusion3Request Request(long seed) => new()
    {
        Prompt = "a red circle", NegativePrompt = "blue", NumInferenceSteps = 2, GuidanceScale = 4.0, Height = 32, Width = 48,
        Generator = new Generator("cpu").ManualSeed(seed), MaxSequenceLength = 16, OutputType = OutputType.Tensor,
    };

    [Fact]
    public void OffloadedTextToImageEqualsThePlainRunAndMovesModelsInDiffusersOrder()
    {
        using var plain = StableDiffusion3Pipeline.FromPretrained(Fixtures.TinySd3Model);
        using var offloaded = StableDiffusion3Pipeline.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { Offload = OffloadMode.Model });
        Assert.Equal(OffloadMode.None, plain.Components.Offload);
        Assert.Equal(OffloadMode.Model, offloaded.Components.Offload);
        var moves = new List<ModelMove>();
        offloaded.Components.ModelMoved += moves.Add;

        using var expected = plain.Generate(Request(7));
        using var actual = offloaded.Generate(Request(7));
        Assert.True(expected.Tensor!.equal(actual.Tensor!).all().item<bool>(), "offloaded output differs from the plain run");

        // The prompt, then the negative prompt, each through the three encoders; then the denoising loop and the decode.
        string[] order = ["text_encoder", "text_encoder_2", "text_encoder_3", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae"];
        var expectedMoves = order.SelectMany(name => new[] { $"{name} -> cpu", $"{name} <- cpu" }).ToList();
        Assert.Equal(expectedMoves, moves.Select(m => m.ToString()).ToList());
        // One model at a time: every arrival is followed by that model's departure before the next arrival.
        for (int i = 0; i < moves.Count; i += 2)
        {
            Assert.True(moves[i].ToExecutionDevice);
            Assert.False(moves[i + 1].ToExecutionDevice);
            Assert.Equal(moves[i].Component, moves[i + 1].Component);
        }

        // A second call runs the same sequence again (nothing was left on the device).
        moves.Clear();
        using var again = offloaded.Generate(Request(7) with { OutputType = OutputType.Latent });
        Assert.Equal(expectedMoves.Take(14), moves.Select(m => m.ToString())); // latent output: no decode, the transformer goes back
    }

    [Fact]
    public void OffloadedImg2ImgEqualsThePlainRunAndUsesTheVaeBeforeTheTransformer()
    {
        using var plain = StableDiffusion3Img2ImgPipeline.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = false });
        using var offloaded = StableDiffusion3Img2ImgPipeline.FromPretrained(Fixtures.TinySd3Model,
            new PipelineLoadOptions { LoadTextEncoder3 = false, Offload = OffloadMode.Model });
        var moves = new List<string>();
        offloaded.Components.ModelMoved += m => { if (m.ToExecutionDevice) moves.Add(m.Component); };
        var image = ImageFile.Load(Fixtures.Path("tiny-sd3/init_image.png"));
        StableDiffusion3Img2ImgRequest Request() => new()
        {
            Prompt = "x", Image = image, Strength = 0.75, NumInferenceSteps = 4, GuidanceScale = 3.0, Height = 32, Width = 32,
            Generator = new Generator("cpu").ManualSeed(3), MaxSequenceLength = 8, OutputType = OutputType.Tensor,
        };
        using var expected = plain.Generate(Request());
        using var actual = offloaded.Generate(Request());
        Assert.True(expected.Tensor!.equal(actual.Tensor!).all().item<bool>());
        Assert.Equal(["text_encoder", "text_encoder_2", "text_encoder", "text_encoder_2", "vae", "transformer", "vae"], moves);
    }

    [Fact]
    public void EnablingOffloadOnLoadedComponentsIsIdempotentAndAPipelineWithoutTextEncodersNeedsEmbeddings()
    {
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = false });
        var moves = new List<ModelMove>();
        components.ModelMoved += moves.Add;
        components.EnableModelCpuOffload();
        components.EnableModelCpuOffload();
        Assert.Equal(OffloadMode.Model, components.Offload);
        Assert.Empty(moves); // enabling moves everything to the CPU silently; moves start with the first use

        // diffusers' text_encoder=None: prompt embeddings only.
        var configs = PipelineConfigs.Resolve(Fixtures.TinySd3Model);
        using var bare = new StableDiffusion3Components
        {
            Transformer = RandomWeights.Build((d, t) => new SD3Transformer2DModel(configs.Transformer, d, t), CPU, ScalarType.Float32),
            Vae = RandomWeights.Build((d, t) => new AutoencoderKL(configs.Vae, d, t), CPU, ScalarType.Float32),
            SchedulerConfig = configs.Scheduler, Device = CPU, Dtype = ScalarType.Float32,
        };
        using var pipe = new StableDiffusion3Pipeline(bare);
        var e = Assert.Throws<ArgumentException>(() => pipe.Generate(Request(1) with { NegativePrompt = null }));
        Assert.Contains("prompt_embeds", e.Message);
        using var embeds = randn(1, 77 + 16, configs.Transformer.JointAttentionDim);
        using var pooled = randn(1, configs.Transformer.PooledProjectionDim);
        using var output = pipe.Generate(Request(1) with
        {
            Prompt = null, NegativePrompt = null, PromptEmbeds = embeds, PooledPromptEmbeds = pooled,
            NegativePromptEmbeds = embeds, NegativePooledPromptEmbeds = pooled,
        });
        Assert.Equal(new long[] { 1, 3, 32, 48 }, output.Tensor!.shape);
    }

    [Fact]
    public void TheMoverReplacesEveryTensorKeepsTiesAndFreesTheOldCopies()
    {
        // The CPU runs above never move anything (execution device = CPU); moving to meta exercises the real path.
        var configs = PipelineConfigs.Resolve(Fixtures.TinySd3Model);
        using var t5 = RandomWeights.Build((d, t) => new T5EncoderModel(configs.TextEncoder3!, d, t), CPU, ScalarType.Float32);
        var before = t5.state_dict();
        var old = before["shared.weight"];
        ModuleMover.MoveTo(t5, new Device(DeviceType.META));
        var after = t5.state_dict();
        Assert.Equal(before.Keys, after.Keys);
        Assert.All(after.Values, v => Assert.Equal(DeviceType.META, v.device_type));
        Assert.All(t5.parameters(), p => Assert.False(p.requires_grad));
        Assert.Equal(after["shared.weight"].Handle, after["encoder.embed_tokens.weight"].Handle);
        Assert.True(old.IsInvalid); // disposed at once, not left to the GC
        ModuleMover.MoveTo(t5, new Device(DeviceType.META)); // already there: nothing to do
        Assert.Equal(after["shared.weight"].Handle, t5.state_dict()["shared.weight"].Handle);
    }

    [Fact]
    public void OffloadKeepsTheCpuCopiesAndReturnsToThemUnlessATensorWasReplacedOnTheDevice()
    {
        // meta stands in for a GPU: moving there drops the values, so getting them back proves the CPU copies were kept.
        var configs = PipelineConfigs.Resolve(Fixtures.TinySd3Model);
        using var t5 = RandomWeights.Build((d, t) => new T5EncoderModel(configs.TextEncoder3!, d, t), CPU, ScalarType.Float32);
        var expected = t5.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var moves = new List<string>();
        using var offloader = new ModelOffloader(new Device(DeviceType.META), new Dictionary<string, nn.Module> { ["text_encoder_3"] = t5 },
            m => moves.Add(m.ToString()));

        offloader.Activate("text_encoder_3");
        Assert.All(t5.state_dict().Values, v => Assert.Equal(DeviceType.META, v.device_type));
        Assert.Equal(t5.state_dict()["shared.weight"].Handle, t5.state_dict()["encoder.embed_tokens.weight"].Handle);
        // One tensor replaced while the model is out (as a dtype cast replaces them): the stale CPU copy must not come back.
        const string replaced = "encoder.final_layer_norm.weight";
        DiffusersSharp.IO.StateDictLoader.Replace(t5, replaced, zeros(t5.state_dict()[replaced].shape));
        offloader.OffloadAll();

        Assert.Equal(["text_encoder_3 -> meta", "text_encoder_3 <- meta"], moves);
        var back = t5.state_dict();
        Assert.Equal(expected.Keys.Order(), back.Keys.Order());
        foreach (var (key, value) in back)
        {
            Assert.Equal(DeviceType.CPU, value.device_type);
            var want = key == replaced ? zeros_like(expected[key]) : expected[key];
            Assert.True(value.equal(want).all().item<bool>(), $"{key} does not hold its values");
        }
        Assert.Equal(back["shared.weight"].Handle, back["encoder.embed_tokens.weight"].Handle);
        Assert.All(t5.parameters(), p => Assert.False(p.requires_grad));
    }

    [Fact]
    public void WeightsAndBuffersSurviveOffloadCyclesAcrossDisposeScopes()
    {
        // An H200 run of 4 offloaded SD3.5 steps failed with "Tensor invalid -- empty handle": the kept CPU copies must
        // outlive the dispose scope the move happened in, and a buffer (SD3's pos_embed), which the module holds as the
        // kept copy itself going back, must not be freed with the copies.
        var configs = PipelineConfigs.Resolve(Fixtures.TinySd3Model);
        using var transformer = RandomWeights.Build((d, t) => new SD3Transformer2DModel(configs.Transformer, d, t), CPU, ScalarType.Float32);
        Assert.Contains(transformer.named_buffers(), b => b.name == "pos_embed.pos_embed");
        var expected = transformer.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var tc = configs.Transformer;
        using var x = randn(1, tc.InChannels, 16, 16);
        using var text = randn(1, 5, tc.JointAttentionDim);
        using var pooled = randn(1, tc.PooledProjectionDim);
        using var t = tensor(new float[] { 500f });
        Tensor Forward() { using var _ = no_grad(); return transformer.forward(x, text, pooled, t); }
        using var before = Forward();
        using var offloader = new ModelOffloader(new Device(DeviceType.META), new Dictionary<string, nn.Module> { ["transformer"] = transformer }, _ => { });

        for (int cycle = 0; cycle < 3; cycle++)
        {
            // As in a pipeline call: the model comes in inside one dispose scope (a denoising loop's) and leaves in another.
            using (NewDisposeScope())
            {
                offloader.Activate("transformer");
                Assert.All(transformer.state_dict().Values, v => Assert.Equal(DeviceType.META, v.device_type));
            }
            using (NewDisposeScope()) offloader.OffloadAll();
            foreach (var (key, value) in transformer.state_dict())
            {
                Assert.False(value.IsInvalid, $"{key} was freed (cycle {cycle})");
                Assert.True(value.equal(expected[key]).all().item<bool>(), $"{key} does not hold its values (cycle {cycle})");
            }
            using var after = Forward(); // the forward reads its fields, which must be the tensors the state dict holds
            Assert.True(before.equal(after).all().item<bool>(), $"the forward changed after cycle {cycle}");
        }
    }

    [Fact]
    public void AHostCopyIsOnlyTakenBackForTheTensorThatWasMoved()
    {
        using var moved = zeros(2);
        using var other = zeros(2);
        var host = ones(2);
        using var copies = new ModuleMover.HostCopies();
        copies.Add("w", host, moved);
        Assert.Null(copies.Take("w", other)); // replaced on the device: the copy is stale and freed
        Assert.True(host.IsInvalid);
        Assert.Null(copies.Take("w", moved)); // taken (and dropped) once
        var again = ones(2);
        copies.Add("v", again, moved);
        Assert.Same(again, copies.Take("v", moved));
        again.Dispose();
    }
}
