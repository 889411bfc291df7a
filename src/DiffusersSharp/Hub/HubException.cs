namespace DiffusersSharp.Hub;

/// <summary>Why a hub operation failed.</summary>
public enum HubErrorKind
{
    /// <summary>The text given is neither a local folder nor a valid <c>org/name</c> repo id, or an option is invalid.</summary>
    InvalidRepoId,
    /// <summary>The repo is gated and this account (or anonymous access) has not been granted it.</summary>
    GatedRepo,
    /// <summary>Authentication needed or the token was rejected.</summary>
    Unauthorized,
    /// <summary>No such repo (or a private one the token cannot see).</summary>
    RepoNotFound,
    /// <summary>No such branch, tag or commit.</summary>
    RevisionNotFound,
    /// <summary>A file the pipeline needs is absent from the repo.</summary>
    EntryNotFound,
    /// <summary>The repo has no weights this library reads (safetensors), or no <c>model_index.json</c>.</summary>
    UnsupportedRepo,
    /// <summary>Offline mode and the model is not (completely) in the cache.</summary>
    NotCached,
    /// <summary>The hub could not be reached or a transfer broke; a partial file is kept for resuming.</summary>
    Network,
    /// <summary>Downloaded bytes do not match the hub's checksum; the bad data was deleted.</summary>
    Integrity,
}

/// <summary>A hub download or cache lookup failed; the message says what to do. It never contains the token.</summary>
public sealed class HubException : Exception
{
    /// <summary>Creates the exception.</summary>
    public HubException(HubErrorKind kind, string message, Exception? inner = null) : base(message, inner) => Kind = kind;

    /// <summary>What went wrong.</summary>
    public HubErrorKind Kind { get; }

    /// <summary>
    /// Whether the caller's input is at fault (repo id, revision, token, licence, offline cache): CLI exit code 2;
    /// otherwise (network, corrupted transfer) exit code 1.
    /// </summary>
    public bool IsInvalidInput => Kind is not (HubErrorKind.Network or HubErrorKind.Integrity);
}
