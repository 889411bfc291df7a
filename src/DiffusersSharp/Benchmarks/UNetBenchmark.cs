using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// The SD 1.x / 2.x and SDXL measures (tools/bench/diffusers_baseline_sdxl.py takes the same in diffusers): the UNet
/// forward at batch 2 (CFG) with 77 text tokens (SDXL: plus pooled embeddings and 6 time ids), the pipeline with given
/// prompt embeddings, the VAE decode, and each CLIP at batch 2 x 77 (SDXL: all hidden states, as its encode_prompt asks).
/// </summary>
internal static class UNetBenchmark
{
    public static FamilyMeasures Run(BenchmarkRun run, UNetPipelineConfigs configs, PeakMemoryMonitor memory)
    {
        var options = run.Options;
        var (device, dtype) = (run.Device, run.Dtype);
        StableDiffusionComponents components;
        if (run.RandomWeights)
        {
            run.Log($"building {configs.Name} UNet and VAE with random weights on {device} ({options.Dtype})");
            var unet = run.BuildRandom("unet", (d, t) => new UNet2DConditionModel(configs.Unet, d, t));
            var vae = run.BuildRandom("vae", (d, t) => new AutoencoderKL(configs.Vae, d, t));
            components = new StableDiffusionComponents { Unet = unet, Vae = vae, Device = device, Dtype = dtype };
            components.UseScheduler(configs.Scheduler);
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
        }
        else
        {
            run.Log($"loading {options.Model} on {device} ({options.Dtype})");
            components = StableDiffusionComponents.FromPretrained(run.Folder!, new PipelineLoadOptions
            {
                Dtype = dtype, Device = options.Device, Offload = options.Offload,
            }, run.Ct);
            foreach (var (name, ms) in components.LoadMilliseconds) run.LoadMs[name] = BenchmarkRun.Round(ms);
        }
        double modelsReady = run.Since();

        TimingReport unetTiming, pipelineTiming, vaeTiming;
        MemoryReport memoryReport;
        bool xl = configs.IsXL;
        using (StableDiffusionPipelineBase pipeline = xl ? new StableDiffusionXLPipeline(components) : new StableDiffusionPipeline(components))
        {
            components.Dispose(); // the pipeline's reference keeps them until it is disposed
            run.Parameters["unet"] = RandomWeights.CountParameters(components.Unet);
            run.Parameters["vae"] = RandomWeights.CountParameters(components.Vae);
            var uc = components.Unet.Config;
            int crossDim = uc.CrossAttentionDim.Expand(uc.DownBlockTypes.Length, "cross_attention_dim")[0];
            int pooledDim = xl ? uc.ProjectionClassEmbeddingsInputDim!.Value - 6 * uc.AdditionTimeEmbedDim!.Value : 0;
            int latentH = run.Height / components.Vae.VaeScaleFactor, latentW = run.Width / components.Vae.VaeScaleFactor;
            using var scope = NewDisposeScope();
            using var inference = inference_mode();
            var embeds = randn([1, 77, crossDim], dtype: dtype, device: device);
            var pooled = xl ? randn([1, pooledDim], dtype: dtype, device: device) : null;

            run.Log($"pipeline: {run.Width}x{run.Height}, {run.Steps} steps, guidance {run.Guidance}");
            var request = new StableDiffusionRequest
            {
                PromptEmbeds = embeds, NegativePromptEmbeds = embeds, PooledPromptEmbeds = pooled, NegativePooledPromptEmbeds = pooled,
                Height = run.Height, Width = run.Width, NumInferenceSteps = run.Steps, GuidanceScale = run.Guidance, OutputType = OutputType.Image,
            };
            pipelineTiming = run.Time($"{run.Width}x{run.Height}, {run.Steps} steps, guidance {run.Guidance}, {components.SchedulerClassName}, prompt embeddings 1x77{(xl ? " + pooled" : "")}, image output", () =>
            {
                using var generator = new Generator(device).ManualSeed(options.Seed);
                var call = request with { Generator = generator };
                using var output = pipeline switch
                {
                    StableDiffusionXLPipeline p => p.Generate(call, cancellationToken: run.Ct),
                    StableDiffusionPipeline p => p.Generate(call, cancellationToken: run.Ct),
                    _ => throw new InvalidOperationException("Not a text-to-image pipeline."),
                };
                if (output.Images is not { Count: 1 }) throw new InvalidOperationException("The pipeline returned no image.");
                run.MarkFirstImage();
            });
            memoryReport = memory.Report();

            run.Log("UNet forward, batch 2");
            components.Activate("unet");
            var x = randn([2, uc.InChannels, latentH, latentW], dtype: dtype, device: device);
            var text2 = embeds.repeat(2, 1, 1);
            var pooled2 = pooled?.repeat(2, 1);
            var timeIds = xl ? tensor(new float[] { run.Height, run.Width, 0, 0, run.Height, run.Width }, device: device).to(dtype).unsqueeze(0).repeat(2, 1) : null;
            var timestep = tensor(new float[] { 500f, 500f }, device: device);
            unetTiming = run.Time($"batch 2 x {uc.InChannels}x{latentH}x{latentW} latents + 77 text tokens{(xl ? $" + pooled {pooledDim} + 6 time ids" : "")}, timestep 500",
                () => components.Unet.forward(x, timestep, text2, pooled2, timeIds).Dispose());

            run.Log("VAE decode");
            components.Activate("vae");
            vaeTiming = run.TimeVaeDecode(components.Vae, latentH, latentW);
            components.OffloadAll();

            if (!run.RandomWeights)
            {
                if (components.TextEncoder is { } clipL) { components.Activate("text_encoder"); run.TimeClip("clip_l", "text_encoder", clipL, clipL.Config, 2, xl); }
                if (components.TextEncoder2 is { } clipG) { components.Activate("text_encoder_2"); run.TimeClip("clip_g", "text_encoder_2", clipG, clipG.Config, 2, true); }
                components.OffloadAll();
            }
        }

        if (run.RandomWeights)
        {
            // Built one at a time after the pipeline is gone, as the SD3 reference does.
            if (configs.TextEncoder is { } te) run.TimeRandomClip("clip_l", "text_encoder", te, withProjection: false, 2, xl);
            if (configs.TextEncoder2 is { } te2) run.TimeRandomClip("clip_g", "text_encoder_2", te2, withProjection: true, 2, true);
        }
        var encoders = new Dictionary<string, string>();
        if (configs.TextEncoder is not null) encoders["clip_l"] = "clipl_b2_ms";
        if (xl) encoders["clip_g"] = "clipg_b2_ms";
        return new FamilyMeasures(unetTiming, true, 2, pipelineTiming, vaeTiming, memoryReport, modelsReady, 77, encoders);
    }
}
