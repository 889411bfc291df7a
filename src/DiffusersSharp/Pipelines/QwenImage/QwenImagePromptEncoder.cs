using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>
/// diffusers' <c>QwenImagePipeline._get_qwen_prompt_embeds</c>: each prompt in Qwen-Image's chat template (a system turn
/// asking to describe the image, the prompt as the user turn, the assistant turn opened), tokenized with truncation at
/// 1024 + 34 tokens and padded to the longest, the Qwen2.5-VL text model's last hidden states, and per prompt the rows of
/// its real tokens without the template's first 34 (the system turn), zero-padded again to the longest, with a mask.
/// </summary>
public sealed class QwenImagePromptEncoder
{
    /// <summary>diffusers' <c>prompt_template_encode</c>; the prompt replaces <c>{0}</c>.</summary>
    public const string Template = "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{0}<|im_end|>\n<|im_start|>assistant\n";

    /// <summary>diffusers' <c>prompt_template_encode_start_idx</c>: the template's tokens before the prompt's turn.</summary>
    public const int DropTokens = 34;

    /// <summary>diffusers' <c>tokenizer_max_length</c> (the limit after the dropped tokens).</summary>
    public const int TokenizerMaxLength = 1024;

    private readonly Qwen2Tokenizer _tokenizer;
    private readonly Qwen2_5_VLTextModel _textEncoder;

    /// <summary>Wraps a tokenizer and the text model (neither is owned).</summary>
    public QwenImagePromptEncoder(Qwen2Tokenizer tokenizer, Qwen2_5_VLTextModel textEncoder)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _textEncoder = textEncoder ?? throw new ArgumentNullException(nameof(textEncoder));
    }

    /// <summary>
    /// Encodes <paramref name="prompts"/> as one batch: [B, L, hidden] embeddings in <paramref name="dtype"/> on
    /// <paramref name="device"/> (L: the longest prompt's real tokens after the system turn) and their [B, L] int64 mask,
    /// owned by the caller.
    /// </summary>
    /// <exception cref="ArgumentException">No prompts, or a null prompt.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public (Tensor PromptEmbeds, Tensor Mask) Encode(IReadOnlyList<string> prompts, Device device, ScalarType dtype, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(device);
        if (prompts.Count == 0) throw new ArgumentException("Give at least one prompt.", nameof(prompts));
        if (prompts.Any(p => p is null)) throw new ArgumentException("A prompt is null.", nameof(prompts));
        cancellationToken.ThrowIfCancellationRequested();

        var rows = prompts.Select(p => _tokenizer.Encode(string.Format(System.Globalization.CultureInfo.InvariantCulture, Template, p),
            TokenizerMaxLength + DropTokens, padToMaxLength: false).Ids).ToArray();
        int length = rows.Max(r => r.Length);
        var ids = new long[rows.Length * length];
        var mask = new long[rows.Length * length];
        for (int i = 0; i < rows.Length; i++)
            for (int j = 0; j < length; j++)
            {
                bool real = j < rows[i].Length;
                ids[i * length + j] = real ? rows[i][j] : _tokenizer.PadTokenId;
                mask[i * length + j] = real ? 1 : 0;
            }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var modelDevice = _textEncoder.WeightDevice();
        var hidden = _textEncoder.LastHiddenState(tensor(ids, [rows.Length, length], device: modelDevice),
            tensor(mask, [rows.Length, length], device: modelDevice), cancellationToken);
        // _extract_masked_hidden with right padding: each prompt's first n rows; then [drop:], re-padded with zeros.
        int kept = rows.Max(r => Math.Max(0, r.Length - DropTokens));
        var embeds = zeros([rows.Length, kept, hidden.shape[2]], hidden.dtype, hidden.device);
        var keep = zeros([rows.Length, kept], ScalarType.Int64, device);
        for (int i = 0; i < rows.Length; i++)
        {
            int n = Math.Max(0, rows[i].Length - DropTokens);
            if (n == 0) continue;
            embeds[i].narrow(0, 0, n).copy_(hidden[i].narrow(0, DropTokens, n));
            keep[i].narrow(0, 0, n).fill_(1);
        }
        return (embeds.to(dtype, device).MoveToOuterDisposeScope(), keep.MoveToOuterDisposeScope());
    }
}
