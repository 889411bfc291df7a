namespace DiffusersSharp.Tokenizers;

/// <summary>
/// What Qwen3's chat template (the Jinja template in Qwen3's tokenizer_config.json) renders for one user message, as
/// diffusers' Z-Image pipeline calls <c>apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
/// add_generation_prompt=True, enable_thinking=True)</c>. Written from the Qwen3 template as published (no Jinja engine
/// here): the message becomes <c>&lt;|im_start|&gt;user\n{content}&lt;|im_end|&gt;\n</c>, the content verbatim; the
/// generation prompt adds <c>&lt;|im_start|&gt;assistant\n</c>, followed by an empty thinking block
/// <c>&lt;think&gt;\n\n&lt;/think&gt;\n\n</c> only when thinking is switched off.
/// </summary>
public static class Qwen3ChatTemplate
{
    /// <summary>The rendering of a conversation made of one user message with <paramref name="content"/>.</summary>
    /// <param name="content">The user's message (Z-Image: the prompt), inserted as it is.</param>
    /// <param name="addGenerationPrompt">Append the assistant turn's header (diffusers: true).</param>
    /// <param name="enableThinking">Qwen3's enable_thinking (diffusers: true); false appends an empty thinking block
    /// after the generation prompt.</param>
    public static string ApplyUserMessage(string content, bool addGenerationPrompt = true, bool enableThinking = true)
    {
        ArgumentNullException.ThrowIfNull(content);
        string text = "<|im_start|>user\n" + content + "<|im_end|>\n";
        if (!addGenerationPrompt) return text;
        text += "<|im_start|>assistant\n";
        return enableThinking ? text : text + "<think>\n\n</think>\n\n";
    }
}
