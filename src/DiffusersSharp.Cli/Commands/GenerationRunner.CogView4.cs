using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.CogView4;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// CogView4's run: generate (CogView4Pipeline) from --prompt-embeds; the options were checked against the family before
// loading (LoadedModel.CheckTextOnlyFlow).
internal sealed partial class GenerationRunner
{
    private Generated GenerateCogView4(LoadedModel model, CogView4Components cogView4, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        var (embeds, negativeEmbeds) = ReadCogView4PromptEmbeds();
        var defaults = new CogView4Request();
        var request = defaults with
        {
            PromptEmbeds = embeds,
            NegativePromptEmbeds = negativeEmbeds,
            // Without --width / --height: the transformer's trained size (sample_size x 8: 1024 for CogView4-6B).
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps ?? defaults.NumInferenceSteps,
            GuidanceScale = settings.GuidanceScale ?? defaults.GuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            OutputType = OutputType.Image,
        };
        using var pipe = new CogView4Pipeline(cogView4);
        if (preview is not null)
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, pipe.PreviewImages) };
        using var result = pipe.Generate(request, progress, ct);
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps, model.Name, "FlowMatchEulerDiscrete", request.GuidanceScale, null));
    }

    /// <summary>
    /// The --prompt-embeds file for CogView4: <c>prompt_embeds</c> [L, D] or [N, L, D] (GLM-4's second-to-last hidden
    /// states) and, for guidance, <c>negative_prompt_embeds</c> of its own length.
    /// </summary>
    private (Tensor Embeds, Tensor? NegativeEmbeds) ReadCogView4PromptEmbeds()
    {
        string file = settings.PromptEmbeds!;
        using var weights = SafetensorsFile.Open(file);
        Tensor? Read(string name)
        {
            if (!weights.Tensors.ContainsKey(name)) return null;
            var t = Track(weights.Read(name).clone());
            return t.dim() == 2 ? Track(t.unsqueeze(0)) : t;
        }
        var embeds = Read("prompt_embeds") ?? throw new InvalidDataException($"{file} has no 'prompt_embeds' tensor (CogView4: [L, D] or [N, L, D]).");
        return (embeds, Read("negative_prompt_embeds"));
    }
}
