using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Chroma;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The Chroma pipelines beyond the parity fixture: loading a diffusers folder (and without T5), from_pipe, model offload,
/// validation before any compute, cancellation, progress, and no tensors left behind. Components: the tiny Chroma model
/// of local-diffusers/chroma with tiny-sd3's VAE, T5 and tokenizer.
/// </summary>
public sealed class ChromaPipelineTests : IDisposable
{
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/chroma/expected.safetensors");
    private readonly ChromaComponents _components = LocalDiffusersChroma.Components(text: true);

    private static ChromaRequest Prompt(long seed = 123) => new()
    {
        Prompt = "A photo of a group of teddy bears eating pizza on the surface of mars", NegativePrompt = "pepperoni",
        NumImagesPerPrompt = 2, MaxSequenceLength = 256, Height = 64, Width = 64, NumInferenceSteps = 3, GuidanceScale = 4.0,
        Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
    };

    [Fact]
    public void AFolderLoadsAndFromPipeSharesItsComponents()
    {
        string dir = Directory.CreateTempSubdirectory("chroma").FullName;
        try
        {
            TinyChromaPipelineFolder.Write(dir);
            using var pipe = ChromaPipeline.FromPretrained(dir);
            Assert.Equal(ChromaComponents.PipelineClassName, pipe.Components.PipelineClass);
            using (var result = pipe.Generate(Prompt())) // the fixture's prompt case, from the folder
                TensorAssert.Close(result.Tensor!, _expected["prompt.latents"], 1e-5, "prompt latents");
            using var img2img = ChromaImg2ImgPipeline.FromPipe(pipe);
            Assert.Same(pipe.Components, img2img.Components);
            pipe.Dispose();
            using (var edited = img2img.Generate(new ChromaImg2ImgRequest
            {
                Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Prompt = "a cat", Height = 32, Width = 32, NumInferenceSteps = 2,
                MaxSequenceLength = 16, Generator = new Generator("cpu").ManualSeed(1),
            }))
                Assert.Equal((32, 32), (edited.Images![0].Height, edited.Images[0].Width));

            // text_encoder=None: no T5 loaded; embeddings run, prompts are refused.
            using var noText = ChromaPipeline.FromPretrained(dir, new PipelineLoadOptions { LoadTextEncoders = false });
            Assert.Null(noText.Components.TextEncoder);
            Assert.Null(noText.Components.Tokenizer);
            Assert.Contains("no T5 text encoder", Assert.Throws<ArgumentException>(() => noText.Generate(Prompt())).Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AnotherPipelineClassIsRefused()
    {
        string dir = Directory.CreateTempSubdirectory("chroma").FullName;
        try
        {
            TinyChromaPipelineFolder.Write(dir, "FluxPipeline");
            Assert.Contains("not ChromaPipeline", Assert.Throws<InvalidDataException>(() => ChromaComponents.FromPretrained(dir, new PipelineLoadOptions())).Message);
            TinyChromaPipelineFolder.Write(dir, ChromaComponents.Img2ImgPipelineClassName);
            using var components = ChromaComponents.FromPretrained(dir, new PipelineLoadOptions());
            Assert.Equal(ChromaComponents.Img2ImgPipelineClassName, components.PipelineClass);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void OffloadedRunEqualsThePlainRunAndMovesModelsInDiffusersOrder()
    {
        string dir = Directory.CreateTempSubdirectory("chroma").FullName;
        try
        {
            TinyChromaPipelineFolder.Write(dir);
            using var offloaded = ChromaPipeline.FromPretrained(dir, new PipelineLoadOptions { Offload = OffloadMode.Model });
            var moves = new List<string>();
            offloaded.Components.ModelMoved += m => { if (m.ToExecutionDevice) moves.Add(m.Component); };
            using var plain = new ChromaPipeline(_components);
            using var expected = plain.Generate(Prompt() with { OutputType = OutputType.Tensor });
            using var actual = offloaded.Generate(Prompt() with { OutputType = OutputType.Tensor });
            Assert.True(expected.Tensor!.equal(actual.Tensor!).all().item<bool>(), "offloaded output differs from the plain run");
            // The prompt and the negative prompt through T5, the loop, the decode.
            Assert.Equal(["text_encoder", "transformer", "vae"], moves.Distinct());
            Assert.Equal("vae", moves[^1]);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void InvalidRequestsFailBeforeCompute()
    {
        using var pipe = new ChromaPipeline(_components);
        var ok = new ChromaRequest { Prompt = "x", Height = 32, Width = 32, NumInferenceSteps = 2, MaxSequenceLength = 8 };
        string Refused(ChromaRequest r) => Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message;
        Assert.Contains("multiples of 16", Refused(ok with { Height = 40 }));
        Assert.Contains("num_inference_steps", Refused(ok with { NumInferenceSteps = 0 }));
        Assert.Contains("sigmas were given", Refused(ok with { Sigmas = [1f, 0.5f, 0.2f] }));
        Assert.Contains("sigmas must not be empty", Refused(ok with { NumInferenceSteps = null, Sigmas = [] }));
        Assert.Contains("guidance_scale", Refused(ok with { GuidanceScale = double.NaN }));
        Assert.Contains("num_images_per_prompt", Refused(ok with { NumImagesPerPrompt = 0 }));
        Assert.Contains("max_sequence_length", Refused(ok with { MaxSequenceLength = 513 }));
        Assert.Contains("not both", Refused(ok with { PromptEmbeds = zeros(1, 4, 96), PromptAttentionMask = ones(1, 4) }));
        Assert.Contains("prompt_attention_mask too", Refused(ok with { Prompt = null, PromptEmbeds = zeros(1, 4, 96) }));
        Assert.Contains("goes with prompt_embeds", Refused(ok with { PromptAttentionMask = ones(1, 4) }));
        Assert.Contains("joint_attention_dim", Refused(ok with { Prompt = null, PromptEmbeds = zeros(1, 4, 95), PromptAttentionMask = ones(1, 4) }));
        Assert.Contains("first two dimensions", Refused(ok with { Prompt = null, PromptEmbeds = zeros(1, 4, 96), PromptAttentionMask = ones(1, 5) }));
        Assert.Contains("rows for 1 prompts", Refused(ok with
        {
            NegativePromptEmbeds = zeros(2, 4, 96), NegativePromptAttentionMask = ones(2, 4),
        }));
        Assert.Contains("negative_prompt_attention_mask too", Refused(ok with { NegativePromptEmbeds = zeros(1, 4, 96) }));
        Assert.Contains("negative prompts were given", Refused(ok with { Prompt = new[] { "a", "b", "c" }, NegativePrompt = new[] { "a", "b" } }));
        Assert.Contains("generators", Refused(ok with { Generators = [new Generator("cpu"), new Generator("cpu")] }));
        Assert.Contains("latents must be packed", Refused(ok with { Latents = zeros(1, 16, 4, 4) }));
        using var img2img = ChromaImg2ImgPipeline.FromPipe(pipe);
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
        string RefusedI2I(ChromaImg2ImgRequest r) => Assert.Throws<ArgumentException>(() => img2img.Generate(r)).Message;
        var i2i = new ChromaImg2ImgRequest { Prompt = "x", Image = image, Height = 32, Width = 32, NumInferenceSteps = 2, MaxSequenceLength = 8 };
        Assert.Contains("image is required", RefusedI2I(i2i with { Image = null }));
        Assert.Contains("strength must be in [0, 1]", RefusedI2I(i2i with { Strength = 1.5 }));
        Assert.Contains("leaves 0 steps", RefusedI2I(i2i with { Strength = 0 }));
        Assert.Contains("Cannot repeat 2 images", RefusedI2I(i2i with { Image = PipelineImage.FromTensor(zeros(2, 16, 4, 4)) }));
        // Without T5, a prompt (or the negative side of guidance) cannot be encoded.
        using var noText = new ChromaComponents
        {
            Transformer = _components.Transformer, Vae = _components.Vae, SchedulerConfig = _components.SchedulerConfig, Device = CPU, Dtype = ScalarType.Float32,
        };
        using var embedsOnly = new ChromaPipeline(noText);
        Assert.Contains("negative_prompt_embeds", Assert.Throws<ArgumentException>(() => embedsOnly.Generate(ok with
        {
            Prompt = null, PromptEmbeds = zeros(1, 4, 96), PromptAttentionMask = ones(1, 4),
        })).Message);
    }

    [Fact]
    public void CancellationStopsBetweenStepsAndProgressReportsTheStages()
    {
        using var pipe = new ChromaPipeline(_components);
        using var cts = new CancellationTokenSource();
        int steps = 0;
        var request = new ChromaRequest
        {
            Prompt = "x", Height = 32, Width = 32, NumInferenceSteps = 4, MaxSequenceLength = 8, OutputType = OutputType.Latent,
            CallbackOnStepEnd = _ => { if (++steps == 2) cts.Cancel(); },
        };
        Assert.Throws<OperationCanceledException>(() => pipe.Generate(request, null, cts.Token));
        Assert.Equal(2, steps);
        var stages = new List<PipelineProgress>();
        using (var image = pipe.Generate(request with { NumInferenceSteps = 2, CallbackOnStepEnd = null, OutputType = OutputType.Image },
            new SyncProgress(stages.Add)))
            Assert.Single(image.Images!);
        Assert.Equal(["encode", "denoise", "decode"], stages.Select(s => s.Stage).Distinct());
        Assert.Contains(new PipelineProgress("denoise", 2, 2), stages);
    }

    [Fact]
    public void GenerationLeavesNoTensorsBehind()
    {
        using var pipe = new ChromaPipeline(_components);
        var request = new ChromaRequest { Prompt = "x", Height = 32, Width = 32, NumInferenceSteps = 2, MaxSequenceLength = 8, OutputType = OutputType.Numpy };
        using (var warm = pipe.Generate(request)) { }
        long before = LiveTensors.Count();
        using (var again = pipe.Generate(request)) { }
        Assert.Equal(before, LiveTensors.Count());
    }

    private sealed class SyncProgress(Action<PipelineProgress> report) : IProgress<PipelineProgress>
    {
        public void Report(PipelineProgress value) => report(value);
    }

    public void Dispose() => _components.Dispose();
}
