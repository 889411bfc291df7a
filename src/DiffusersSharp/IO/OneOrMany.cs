using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusersSharp.IO;

/// <summary>
/// A config value that diffusers accepts as one value for every block or as a list with one value per block
/// (<c>attention_head_dim: 8</c> or <c>[5, 10, 20, 20]</c>). A list of lists (diffusers' per-layer form of
/// <c>transformer_layers_per_block</c>) is kept in <see cref="Nested"/> so that models can reject it by name.
/// </summary>
[JsonConverter(typeof(OneOrManyConverterFactory))]
public sealed record OneOrMany<T>
{
    /// <summary>The single value, when the config holds a scalar.</summary>
    public T? Scalar { get; }

    /// <summary>The per-block values, when the config holds a flat list.</summary>
    public T[]? List { get; }

    /// <summary>The per-block lists, when the config holds a list of lists.</summary>
    public T[][]? Nested { get; }

    /// <summary>Whether the config holds a scalar.</summary>
    public bool IsScalar => List is null && Nested is null;

    private OneOrMany(T? scalar, T[]? list, T[][]? nested) => (Scalar, List, Nested) = (scalar, list, nested);

    /// <summary>A scalar.</summary>
    public static OneOrMany<T> One(T value) => new(value, null, null);

    /// <summary>A flat list.</summary>
    public static OneOrMany<T> Many(params T[] values) => new(default, values ?? throw new ArgumentNullException(nameof(values)), null);

    /// <summary>A list of lists.</summary>
    public static OneOrMany<T> ManyNested(T[][] values) => new(default, null, values ?? throw new ArgumentNullException(nameof(values)));

    /// <summary>A scalar.</summary>
    public static implicit operator OneOrMany<T>(T value) => One(value);

    /// <summary>A flat list.</summary>
    public static implicit operator OneOrMany<T>(T[] values) => Many(values);

    /// <summary>
    /// One value per block: the scalar repeated <paramref name="count"/> times, or the list itself when it has
    /// <paramref name="count"/> entries.
    /// </summary>
    /// <exception cref="ArgumentException">The list has another length.</exception>
    /// <exception cref="NotSupportedException">The value is a list of lists.</exception>
    public T[] Expand(int count, string name)
    {
        if (Nested is not null)
            throw new NotSupportedException($"{name} as a list of lists (per-layer values) is not supported; give one value per block.");
        if (List is null) return Enumerable.Repeat(Scalar!, count).ToArray();
        if (List.Length != count)
            throw new ArgumentException($"{name} has {List.Length} entries but the model has {count} blocks; give one per block or a single value.");
        return List;
    }

    /// <inheritdoc/>
    public override string ToString() =>
        Nested is not null ? "[" + string.Join(", ", Nested.Select(l => "[" + string.Join(", ", l) + "]")) + "]"
        : List is not null ? "[" + string.Join(", ", List) + "]"
        : Scalar?.ToString() ?? "null";

    /// <inheritdoc/>
    public bool Equals(OneOrMany<T>? other) => other is not null && ToString() == other.ToString();

    /// <inheritdoc/>
    public override int GetHashCode() => ToString().GetHashCode(StringComparison.Ordinal);
}

/// <summary>Reads and writes <see cref="OneOrMany{T}"/> as a JSON scalar, list or list of lists.</summary>
public sealed class OneOrManyConverterFactory : JsonConverterFactory
{
    /// <inheritdoc/>
    public override bool CanConvert(Type typeToConvert) =>
        typeToConvert.IsGenericType && typeToConvert.GetGenericTypeDefinition() == typeof(OneOrMany<>);

    /// <inheritdoc/>
    public override JsonConverter CreateConverter(Type typeToConvert, JsonSerializerOptions options) =>
        (JsonConverter)Activator.CreateInstance(typeof(Converter<>).MakeGenericType(typeToConvert.GetGenericArguments()[0]))!;

    private sealed class Converter<T> : JsonConverter<OneOrMany<T>>
    {
        public override OneOrMany<T>? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            if (reader.TokenType != JsonTokenType.StartArray)
                return OneOrMany<T>.One(JsonSerializer.Deserialize<T>(ref reader, options)!);
            using var doc = JsonDocument.ParseValue(ref reader);
            var items = doc.RootElement.EnumerateArray().ToList();
            if (items.Count > 0 && items.All(e => e.ValueKind == JsonValueKind.Array))
                return OneOrMany<T>.ManyNested(items.Select(e => e.Deserialize<T[]>(options)!).ToArray());
            return OneOrMany<T>.Many(items.Select(e => e.Deserialize<T>(options)!).ToArray());
        }

        public override void Write(Utf8JsonWriter writer, OneOrMany<T> value, JsonSerializerOptions options)
        {
            if (value.Nested is not null) JsonSerializer.Serialize(writer, value.Nested, options);
            else if (value.List is not null) JsonSerializer.Serialize(writer, value.List, options);
            else JsonSerializer.Serialize(writer, value.Scalar, options);
        }
    }
}
