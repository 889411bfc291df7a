namespace DiffusersSharp.Tokenizers;

/// <summary>
/// The tokenizer half of diffusers' <c>SanaPipeline._get_gemma_prompt_embeds</c> (v0.39.0): with a complex human
/// instruction, its lines joined with "\n" are put in front of every prompt and the width is
/// <c>len(tokenizer.encode(instruction)) + max_sequence_length - 2</c> (the instruction's ids counted with
/// <c>&lt;bos&gt;</c>); without one, the width is max_sequence_length. Then
/// <c>tokenizer(prompts, padding="max_length", max_length=width, truncation=True, add_special_tokens=True)</c> with
/// padding_side "right", as the pipeline sets it. The prompts are taken as given: the pipeline's
/// <c>_text_preprocessing</c> (<c>lower().strip()</c> without clean_caption) is the caller's.
/// </summary>
public static class SanaPromptTokens
{
    /// <summary>SanaPipeline's default <c>complex_human_instruction</c> (diffusers v0.39.0 <c>__call__</c>).</summary>
    public static IReadOnlyList<string> DefaultComplexHumanInstruction { get; } =
    [
        "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",
        "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",
        "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
        "Here are examples of how to transform or refine prompts:",
        "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
        "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",
        "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",
        "User Prompt: ",
    ];

    /// <summary>Tokenizes <paramref name="prompts"/> as <c>_get_gemma_prompt_embeds</c> does.</summary>
    /// <param name="tokenizer">Sana's Gemma tokenizer.</param>
    /// <param name="prompts">The prompts, already preprocessed.</param>
    /// <param name="maxSequenceLength">The pipeline's max_sequence_length (300 by default).</param>
    /// <param name="complexHumanInstruction">The instruction lines; null or empty for none (the pipeline's default is
    /// <see cref="DefaultComplexHumanInstruction"/>, which the caller passes).</param>
    /// <returns>The right-padded ids and attention mask, <see cref="TokenizedBatch.Width"/> = the pipeline's max_length_all.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxSequenceLength"/> is below 2 (the width would not
    /// cover the instruction's own ids).</exception>
    public static TokenizedBatch Tokenize(GemmaTokenizer tokenizer, IReadOnlyList<string> prompts, int maxSequenceLength = 300,
        IReadOnlyList<string>? complexHumanInstruction = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(prompts);
        if (maxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength, "max_sequence_length must be at least 2.");
        if (complexHumanInstruction is null || complexHumanInstruction.Count == 0)
            return tokenizer.EncodeBatch(prompts, maxSequenceLength, truncate: true, PaddingSide.Right);
        string instruction = string.Join("\n", complexHumanInstruction);
        int width = tokenizer.Encode(instruction).Count + maxSequenceLength - 2;
        return tokenizer.EncodeBatch(prompts.Select(p => instruction + p).ToList(), width, truncate: true, PaddingSide.Right);
    }
}
