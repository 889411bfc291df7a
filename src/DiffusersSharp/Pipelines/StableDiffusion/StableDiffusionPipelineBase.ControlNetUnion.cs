using DiffusersSharp.Models.ControlNets;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The ControlNet-Union pipelines' part (diffusers' StableDiffusionXLControlNetUnion[Img2Img|Inpaint]Pipeline): control
// modes, the conditions of each ControlNet-Union and its forward per step. Control images, windows and the rest are the
// ControlNet pipelines' (StableDiffusionPipelineBase.ControlNet.cs).
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>
    /// The ControlNet-Unions of a call and their prepared control images and modes. One ControlNet-Union takes every
    /// image as one of its conditions (a step's scales are per condition); several (diffusers' MultiControlNetUnionModel)
    /// take one image and mode each (a step's scales are per ControlNet).
    /// </summary>
    private sealed class UnionControl(IReadOnlyList<ControlNetUnionModel> nets, Tensor[] images, int[] modes)
    {
        /// <summary>How many forwards a step runs: one for one ControlNet-Union, one per ControlNet for several.</summary>
        public int Runs => nets.Count;

        /// <summary>One ControlNet-Union with several conditions runs at every step, even when all its scales are 0: its
        /// residuals are then not scaled (diffusers multiplies the conditions instead), so they are not zero.</summary>
        public bool RunsWhenScalesAreZero => nets.Count == 1 && images.Length > 1;

        /// <summary>Forward <paramref name="k"/> of a step with its <paramref name="scales"/>; null when skipped (a ControlNet
        /// of several at scale 0, as diffusers' MultiControlNetUnionModel skips it).</summary>
        public ControlNetOutput? Forward(int k, double[] scales, Tensor input, Tensor timestep, Tensor embeds, Func<Tensor, Tensor> half, bool guessMode,
            Tensor? textEmbeds, Tensor? timeIds)
        {
            long rows = input.shape[0];
            if (nets.Count == 1)
                return nets[0].forward(input, timestep, embeds, images.Select(half).ToArray(), ControlType(nets[0], modes, rows, embeds.dtype), modes, scales,
                    fromMulti: false, guessMode, textEmbeds, timeIds);
            if (scales[k] == 0) return null;
            return nets[k].forward(input, timestep, embeds, [half(images[k])], ControlType(nets[k], [modes[k]], rows, embeds.dtype), [modes[k]], [scales[k]],
                fromMulti: true, guessMode, textEmbeds, timeIds);
        }

        /// <summary>diffusers' <c>control_type</c>: zeros(num_control_type) with 1 at the modes in use, repeated to the batch.</summary>
        private static Tensor ControlType(ControlNetUnionModel net, int[] modes, long rows, ScalarType dtype)
        {
            var row = new float[net.Config.NumControlType];
            foreach (int mode in modes) row[mode] = 1;
            return tensor(row, dtype: ScalarType.Float32).to(dtype, net.Device).reshape(1, -1).repeat(rows, 1);
        }
    }

    /// <summary>The ControlNet-Union pipelines' constructor check: <paramref name="components"/> must hold ControlNet-Unions
    /// (checked before the base takes its reference).</summary>
    private protected static StableDiffusionComponents WithControlNetUnions(StableDiffusionComponents components)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.ControlNetUnions.Count == 0)
            throw new ArgumentException(components.ControlNets.Count > 0
                ? "These components hold plain ControlNets (ControlNetModel), not ControlNet-Unions; use StableDiffusionXLControlNetPipeline (or its Img2Img / Inpaint twins)."
                : "These components have no ControlNet-Union; load them with StableDiffusionComponents.FromPretrained(model, options, controlnet) given a ControlNet-Union folder.",
                nameof(components));
        return components;
    }

    /// <summary>The request's control modes: its list, or its one mode as a list of one.</summary>
    private static IReadOnlyList<int> ModesOf(IControlNetUnionRequest r) => r.ControlModes ?? (r.ControlMode is { } one ? [one] : []);

    /// <summary>
    /// diffusers' check_inputs for the ControlNet-Union pipelines, before any compute: one control mode per control image,
    /// each below its model's num_control_type; one image and mode per ControlNet when there are several; scales and
    /// windows per condition (one ControlNet-Union) or per ControlNet; and what those pipelines cannot run (guess mode
    /// under classifier-free guidance; a 9-channel inpainting UNet; padding_mask_crop, which diffusers' union inpainting
    /// refuses for any input: its check sees the control images as a list).
    /// </summary>
    private void CheckControlNetUnionInputs(IControlNetUnionRequest r, StableDiffusionRequest request)
    {
        var nets = Components.ControlNetUnions;
        if (nets.Count == 0)
            throw new ArgumentException("These components have no ControlNet-Union; load them with StableDiffusionComponents.FromPretrained(model, options, controlnet).");
        if (request is StableDiffusionInpaintRequest { PaddingMaskCrop: not null })
            throw new ArgumentException("padding_mask_crop is not supported with ControlNet-Union inpainting: diffusers' StableDiffusionXLControlNetUnionInpaintPipeline refuses it whatever the input (it checks the list of control images as the image).");
        if (r.ControlImage is not null && r.ControlImages is not null)
            throw new ArgumentException("Give control_image as one image or as a list, not both.");
        if (r.ControlMode is not null && r.ControlModes is not null)
            throw new ArgumentException("Give control_mode as one value or as a list, not both.");
        var settings = SettingsOf(r);
        int images = settings.ControlImages.Count;
        var modes = ModesOf(r);
        if (images == 0) throw new ArgumentException("control_image (the control images) is required.");
        if (modes.Count == 0)
            throw new ArgumentException($"control_mode is required: one control type per control image ({string.Join(", ", ControlNetUnionMode.Names.Select(kv => $"{kv.Key} {kv.Value}"))}).");
        if (modes.Count != images)
            throw new ArgumentException($"Expected len(control_image) == len(control_mode): one control mode per control image, got {images} image(s) and {modes.Count} mode(s).");
        if (nets.Count > 1 && images != nets.Count)
            throw new ArgumentException($"{nets.Count} ControlNet-Unions take one control image and one control_mode each, in order; got {images}.");
        for (int k = 0; k < images; k++)
        {
            int types = (nets.Count == 1 ? nets[0] : nets[k]).Config.NumControlType;
            if (modes[k] < 0 || modes[k] >= types)
                throw new ArgumentException($"control_mode: must be lower than {types} (the model's num_control_type) and not negative, got {modes[k]}.");
        }
        int count = nets.Count == 1 ? images : nets.Count;
        string per = nets.Count == 1 ? $"there are {count} control image(s) (one ControlNet-Union: one value per condition)" : $"there are {count} ControlNet-Unions";
        foreach (var (list, name) in new[] { (r.ControlNetConditioningScales, "controlnet_conditioning_scale"), (r.ControlGuidanceStarts, "control_guidance_start"),
                     (r.ControlGuidanceEnds, "control_guidance_end") })
            if (list is not null && list.Count != count)
                throw new ArgumentException($"{name} has {list.Count} element(s) but {per}; give one each, or one value for all.");
        settings.Check(count, k => ((nets.Count == 1 ? nets[0] : nets[k]).Config.ConditioningChannels, "[0, 1]"));
        bool guess = r.GuessMode || (nets[0].Config.GlobalPoolConditions && !IsXLControlNetInpaint(request));
        if (guess && GuidanceOf(request) > 1)
            throw new ArgumentException("Guess mode (asked for, or implied by global_pool_conditions) does not run under classifier-free guidance in diffusers' " +
                "ControlNet-Union pipelines (their control types are batched for both halves while the model sees the conditional half); use guidance_scale <= 1 or leave guess mode off.");
        long unetChannels = Components.Unet.Config.InChannels;
        if (request is StableDiffusionInpaintRequest && unetChannels != Components.Vae.Config.LatentChannels)
            throw new ArgumentException($"diffusers' StableDiffusionXLControlNetUnionInpaintPipeline takes UNets of {Components.Vae.Config.LatentChannels} input channels only; this one takes {unetChannels}.");
    }

    /// <summary>
    /// prepare_image for each control image (as the ControlNet pipelines: at the output size, repeated to the batch, doubled
    /// under CFG outside guess mode), the control modes, and controlnet_keep per condition (one ControlNet-Union) or per
    /// ControlNet over the steps that run. Guess mode is the request's, or the first model's global_pool_conditions (not
    /// in inpainting, whose diffusers pipeline does not read it).
    /// </summary>
    private ControlState PrepareControlUnion(IControlNetUnionRequest r, int numImagesPerPrompt, int height, int width, int batch, bool cfg, int timestepCount)
    {
        var nets = Components.ControlNetUnions;
        bool guess = r.GuessMode || (nets[0].Config.GlobalPoolConditions && !IsXLControlNetInpaint((StableDiffusionRequest)r));
        var settings = SettingsOf(r);
        var sources = settings.ControlImages;
        var processor = ControlImageProcessor;
        var images = new Tensor[sources.Count];
        for (int k = 0; k < images.Length; k++)
            images[k] = PrepareControlImage(processor, sources[k], height, width, batch, numImagesPerPrompt, cfg && !guess, (nets.Count == 1 ? nets[0] : nets[k]).Dtype, maskCrop: null); // padding_mask_crop is refused here
        int count = nets.Count == 1 ? images.Length : nets.Count;
        return new ControlState([], [], guess, settings.StepScales(count, timestepCount)) { Union = new UnionControl(nets, images, ModesOf(r).ToArray()) };
    }
}
