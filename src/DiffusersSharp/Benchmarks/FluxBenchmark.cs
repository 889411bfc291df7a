using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// The Flux.1 measures (tools/bench/diffusers_baseline_flux.py takes the same in diffusers): the transformer forward at
/// batch 1 (Flux has no CFG; FLUX.1-dev embeds the guidance scale instead) with max_sequence_length T5 tokens, the
/// pipeline with given prompt embeddings, the VAE decode, CLIP-L (pooled output) at batch 1 x 77 and T5 at batch 1 x
/// max_sequence_length, as the pipeline encodes one prompt.
/// </summary>
internal static class FluxBenchmark
{
    public static FamilyMeasures Run(BenchmarkRun run, FluxPipelineConfigs configs, PeakMemoryMonitor memory)
    {
        var options = run.Options;
        var (device, dtype) = (run.Device, run.Dtype);
        int tokens = options.MaxSequenceLength!.Value;
        FluxComponents components;
        if (run.RandomWeights)
        {
            run.Log($"building {configs.Name} transformer and VAE with random weights on {device} ({options.Dtype})");
            var transformer = run.BuildRandom("transformer", (d, t) => new FluxTransformer2DModel(configs.Transformer, d, t));
            var vae = run.BuildRandom("vae", (d, t) => new AutoencoderKL(configs.Vae, d, t));
            components = new FluxComponents { Transformer = transformer, Vae = vae, SchedulerConfig = configs.Scheduler, Device = device, Dtype = dtype };
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
        }
        else
        {
            run.Log($"loading {options.Model} on {device} ({options.Dtype})");
            components = FluxComponents.FromPretrained(run.Folder!, new PipelineLoadOptions { Dtype = dtype, Device = options.Device, Offload = options.Offload }, run.Ct);
            foreach (var (name, ms) in components.LoadMilliseconds) run.LoadMs[name] = BenchmarkRun.Round(ms);
        }
        double modelsReady = run.Since();

        TimingReport transformerTiming, pipelineTiming, vaeTiming;
        MemoryReport memoryReport;
        using (var pipeline = new FluxPipeline(components))
        {
            components.Dispose(); // the pipeline's reference keeps them until it is disposed
            run.Parameters["transformer"] = RandomWeights.CountParameters(components.Transformer);
            run.Parameters["vae"] = RandomWeights.CountParameters(components.Vae);
            var tc = components.Transformer.Config;
            bool guidanceEmbeds = tc.GuidanceEmbeds;
            int scale = components.Vae.VaeScaleFactor;
            int latentH = run.Height / scale, latentW = run.Width / scale;
            using var scope = NewDisposeScope();
            using var inference = inference_mode();
            var embeds = randn([1, tokens, tc.JointAttentionDim], dtype: dtype, device: device);
            var pooled = randn([1, tc.PooledProjectionDim], dtype: dtype, device: device);
            string guidance = guidanceEmbeds ? $"guidance {run.Guidance} (embedded)" : "no guidance";

            run.Log($"pipeline: {run.Width}x{run.Height}, {run.Steps} steps, {guidance}");
            pipelineTiming = run.Time($"{run.Width}x{run.Height}, {run.Steps} steps, {guidance}, prompt embeddings 1x{tokens} + pooled, image output", () =>
            {
                using var generator = new Generator(device).ManualSeed(options.Seed);
                using var output = pipeline.Generate(new FluxRequest
                {
                    PromptEmbeds = embeds, PooledPromptEmbeds = pooled, Height = run.Height, Width = run.Width, NumInferenceSteps = run.Steps,
                    GuidanceScale = run.Guidance, MaxSequenceLength = tokens, Generator = generator, OutputType = OutputType.Image,
                }, cancellationToken: run.Ct);
                if (output.Images is not { Count: 1 }) throw new InvalidOperationException("The pipeline returned no image.");
                run.MarkFirstImage();
            });
            memoryReport = memory.Report();

            run.Log("transformer forward, batch 1");
            components.Activate("transformer");
            // Packed latents: 2x2 latent patches as tokens, (H/16)(W/16) of them.
            int packedH = latentH / 2, packedW = latentW / 2;
            var x = randn([1, (long)packedH * packedW, tc.InChannels], dtype: dtype, device: device);
            var imageIds = FluxPipelineBase.LatentImageIds(packedH, packedW, device, dtype);
            var textIds = zeros([tokens, 3], dtype: dtype, device: device);
            var timestep = tensor(new float[] { 0.5f }, device: device).to(dtype); // the pipeline passes t / 1000
            var guidanceTensor = guidanceEmbeds ? tensor(new float[] { (float)run.Guidance }, device: device) : null;
            transformerTiming = run.Time($"batch 1 x {packedH * packedW} image tokens ({tc.InChannels} channels) + {tokens} text tokens, timestep 500{(guidanceEmbeds ? $", guidance {run.Guidance}" : "")}",
                () => components.Transformer.forward(x, embeds, pooled, timestep, imageIds, textIds, guidanceTensor).Dispose());

            run.Log("VAE decode");
            components.Activate("vae");
            vaeTiming = run.TimeVaeDecode(components.Vae, latentH, latentW);
            components.OffloadAll();

            if (!run.RandomWeights)
            {
                if (components.TextEncoder is { } clip) { components.Activate("text_encoder"); run.TimeClip("clip_l", "text_encoder", clip, clip.Config, 1, false); }
                if (components.TextEncoder2 is { } t5) { components.Activate("text_encoder_2"); run.TimeT5("text_encoder_2", t5, 1, tokens); }
                components.OffloadAll();
            }
        }

        if (run.RandomWeights)
        {
            // One at a time after the pipeline is gone: T5-XXL alone is 9.5 GB in bf16.
            run.TimeRandomClip("clip_l", "text_encoder", configs.TextEncoder, withProjection: false, 1, false);
            run.TimeRandomT5("text_encoder_2", configs.TextEncoder2, 1, tokens);
        }
        return new FamilyMeasures(transformerTiming, false, 1, pipelineTiming, vaeTiming, memoryReport, modelsReady, tokens,
            new Dictionary<string, string> { ["t5"] = $"t5xxl_b1_{tokens}_ms", ["clip_l"] = "clipl_b1_ms" });
    }
}
