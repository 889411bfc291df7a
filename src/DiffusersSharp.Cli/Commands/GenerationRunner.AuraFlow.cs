using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.AuraFlow;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// AuraFlow's run: generate (AuraFlowPipeline); the options were checked against the family before loading (LoadedModel.CheckTextOnlyFlow).
internal sealed partial class GenerationRunner
{
    private Generated GenerateAuraFlow(LoadedModel model, AuraFlowComponents auraFlow, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        var defaults = new AuraFlowRequest();
        var request = defaults with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            Height = settings.Height ?? defaults.Height,
            Width = settings.Width ?? defaults.Width,
            NumInferenceSteps = settings.Steps ?? defaults.NumInferenceSteps,
            GuidanceScale = settings.GuidanceScale ?? defaults.GuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            MaxSequenceLength = settings.MaxSequenceLength ?? defaults.MaxSequenceLength,
            OutputType = OutputType.Image,
        };
        using var pipe = new AuraFlowPipeline(auraFlow);
        pipe.OnPromptTruncated = OnTruncated;
        if (preview is not null)
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, pipe.PreviewImages) };
        using var result = pipe.Generate(request, progress, ct);
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps, model.Name, "FlowMatchEulerDiscrete", request.GuidanceScale, null));
    }
}
