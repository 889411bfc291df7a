using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// The SD3 measures, as diffusers_baseline_sd35.py takes them: transformer forward at batch 2 (CFG) with 77 +
/// max_sequence_length text tokens, the pipeline with given embeddings, the VAE decode, CLIP-L / CLIP-G / T5 at batch 2.
/// </summary>
internal static class Sd3Benchmark
{
    public static FamilyMeasures Run(BenchmarkRun run, PipelineConfigs configs, PeakMemoryMonitor memory)
    {
        var options = run.Options;
        var (device, dtype) = (run.Device, run.Dtype);
        int maxSequenceLength = options.MaxSequenceLength!.Value;
        StableDiffusion3Components components;
        if (run.RandomWeights)
        {
            run.Log($"building {configs.Name} transformer and VAE with random weights on {device} ({options.Dtype})");
            var transformer = run.BuildRandom("transformer", (d, t) => new SD3Transformer2DModel(configs.Transformer, d, t));
            var vae = run.BuildRandom("vae", (d, t) => new AutoencoderKL(configs.Vae, d, t));
            components = new StableDiffusion3Components
            {
                Transformer = transformer, Vae = vae, SchedulerConfig = configs.Scheduler, Device = device, Dtype = dtype,
            };
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
        }
        else
        {
            run.Log($"loading {options.Model} on {device} ({options.Dtype})");
            components = StableDiffusion3Components.FromPretrained(run.Folder!, new PipelineLoadOptions
            {
                Dtype = dtype, Device = options.Device, LoadTextEncoder3 = !options.NoT5, Offload = options.Offload,
            }, run.Ct);
            foreach (var (name, ms) in components.LoadMilliseconds) run.LoadMs[name] = BenchmarkRun.Round(ms);
        }
        double modelsReady = run.Since();

        TimingReport transformerTiming, pipelineTiming, vaeTiming;
        MemoryReport memoryReport;
        int textTokens = 77 + maxSequenceLength;
        using (var pipeline = new StableDiffusion3Pipeline(components))
        {
            components.Dispose(); // the pipeline's reference keeps them until it is disposed
            run.Parameters["transformer"] = RandomWeights.CountParameters(components.Transformer);
            run.Parameters["vae"] = RandomWeights.CountParameters(components.Vae);
            var tc = components.Transformer.Config;
            int latentH = run.Height / components.Vae.VaeScaleFactor, latentW = run.Width / components.Vae.VaeScaleFactor;
            using var scope = NewDisposeScope();
            using var inference = inference_mode();
            var embeds = randn([1, textTokens, tc.JointAttentionDim], dtype: dtype, device: device);
            var pooled = randn([1, tc.PooledProjectionDim], dtype: dtype, device: device);
            // Without T5 the pipeline's prompt embeddings end in T5's zero rows (what EncodePrompt gives), so the pipeline
            // measure times what a user without T5 runs; the transformer measure keeps the reference's random rows.
            var pipelineEmbeds = options.NoT5 ? PipelineBenchmark.WithoutT5Rows(embeds, maxSequenceLength) : embeds;
            bool collapsed = StableDiffusion3Request.CollapsesRepeatedText(options.CollapseRepeatedText, device);
            string text = options.NoT5
                ? $"prompt embeddings 1x{textTokens} with {maxSequenceLength} zero T5 rows{(collapsed ? " (run as one counted key)" : "")}"
                : $"prompt embeddings 1x{textTokens}";

            run.Log($"pipeline: {run.Width}x{run.Height}, {run.Steps} steps, guidance {run.Guidance}");
            pipelineTiming = run.Time($"{run.Width}x{run.Height}, {run.Steps} steps, guidance {run.Guidance}, {text}, image output", () =>
            {
                using var generator = new Generator(device).ManualSeed(options.Seed);
                var output = pipeline.Generate(new StableDiffusion3Request
                {
                    PromptEmbeds = pipelineEmbeds, PooledPromptEmbeds = pooled, NegativePromptEmbeds = pipelineEmbeds, NegativePooledPromptEmbeds = pooled,
                    CollapseRepeatedText = options.CollapseRepeatedText,
                    Height = run.Height, Width = run.Width, NumInferenceSteps = run.Steps,
                    GuidanceScale = run.Guidance, Generator = generator, OutputType = OutputType.Image,
                    MaxSequenceLength = maxSequenceLength,
                }, cancellationToken: run.Ct);
                if (output.Images is not { Count: 1 }) throw new InvalidOperationException("The pipeline returned no image.");
                run.MarkFirstImage();
            });
            memoryReport = memory.Report();

            run.Log("transformer forward, batch 2");
            components.Activate("transformer");
            var x = randn([2, tc.InChannels, latentH, latentW], dtype: dtype, device: device);
            var text2 = embeds.repeat(2, 1, 1);
            var pooled2 = pooled.repeat(2, 1);
            var timestep = tensor(new float[] { 500f, 500f }, device: device);
            transformerTiming = run.Time($"batch 2 x {tc.InChannels}x{latentH}x{latentW} latents + {textTokens} text tokens, timestep 500",
                () => components.Transformer.forward(x, text2, pooled2, timestep).Dispose());

            run.Log("VAE decode");
            components.Activate("vae");
            vaeTiming = run.TimeVaeDecode(components.Vae, latentH, latentW);
            components.OffloadAll();

            if (!run.RandomWeights)
            {
                if (components.TextEncoder is { } clipL) { components.Activate("text_encoder"); run.TimeClip("clip_l", "text_encoder", clipL, clipL.Config, 2, true); }
                if (components.TextEncoder2 is { } clipG) { components.Activate("text_encoder_2"); run.TimeClip("clip_g", "text_encoder_2", clipG, clipG.Config, 2, true); }
                if (components.TextEncoder3 is { } t5 && !options.NoT5) { components.Activate("text_encoder_3"); run.TimeT5("text_encoder_3", t5, 2, maxSequenceLength); }
                components.OffloadAll();
            }
        }

        if (run.RandomWeights)
        {
            // Built one at a time after the pipeline is gone, as the reference does.
            if (configs.TextEncoder is { } clipL) run.TimeRandomClip("clip_l", "text_encoder", clipL, withProjection: true, 2, true);
            if (configs.TextEncoder2 is { } clipG) run.TimeRandomClip("clip_g", "text_encoder_2", clipG, withProjection: true, 2, true);
            if (!options.NoT5 && configs.TextEncoder3 is not null) run.TimeRandomT5("text_encoder_3", configs.TextEncoder3, 2, maxSequenceLength);
        }
        return new FamilyMeasures(transformerTiming, false, 2, pipelineTiming, vaeTiming, memoryReport, modelsReady, textTokens,
            new Dictionary<string, string> { ["t5"] = $"t5xxl_b2_{maxSequenceLength}_ms", ["clip_g"] = "clipg_b2_ms", ["clip_l"] = "clipl_b2_ms" });
    }
}
