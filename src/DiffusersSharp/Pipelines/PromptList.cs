namespace DiffusersSharp.Pipelines;

/// <summary>
/// One prompt or a batch of prompts, as diffusers takes <c>str | list[str]</c>: assign a string or an array.
/// </summary>
public readonly record struct PromptList(IReadOnlyList<string> Items)
{
    /// <summary>Number of prompts.</summary>
    public int Count => Items?.Count ?? 0;

    /// <summary>A single prompt.</summary>
    public static implicit operator PromptList(string prompt) => new([prompt]);

    /// <summary>A batch of prompts.</summary>
    public static implicit operator PromptList(string[] prompts) => new(prompts);

    /// <summary>The prompts broadcast to <paramref name="batchSize"/> (a single prompt repeats; otherwise the counts must agree).</summary>
    public IReadOnlyList<string> Broadcast(int batchSize, string what)
    {
        if (Items.Count == batchSize) return Items;
        if (Items.Count == 1) return Enumerable.Repeat(Items[0], batchSize).ToArray();
        throw new ArgumentException($"{what} has {Items.Count} entries but the prompt batch has {batchSize}.");
    }

    /// <inheritdoc />
    public override string ToString() => Items.Count == 1 ? Items[0] : $"[{string.Join(", ", Items)}]";
}
