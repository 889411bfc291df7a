using System.Net;
using System.Net.Sockets;
using System.Text;

namespace DiffusersSharp.Tests.Hub;

/// <summary>A request as the test server saw it.</summary>
internal sealed record MiniRequest(string Method, string Path, IReadOnlyDictionary<string, string> Headers)
{
    public string? Header(string name) => Headers.TryGetValue(name.ToLowerInvariant(), out var v) ? v : null;
}

/// <summary>A response; <see cref="DropAfter"/> sends only that many body bytes, then closes the connection.</summary>
internal sealed record MiniResponse(int Status, IReadOnlyDictionary<string, string> Headers, byte[] Body, int? DropAfter = null)
{
    public static MiniResponse Text(int status, string body, IReadOnlyDictionary<string, string>? headers = null) =>
        new(status, headers ?? new Dictionary<string, string>(), Encoding.UTF8.GetBytes(body));
}

/// <summary>
/// A tiny HTTP/1.1 server on 127.0.0.1 and a port the OS picks, one request per connection, for GET and HEAD only.
/// It stops (and stops accepting) when disposed; every connection has a read deadline so nothing hangs a test.
/// </summary>
internal sealed class MiniHttpServer : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Func<MiniRequest, MiniResponse> _handler;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public MiniHttpServer(Func<MiniRequest, MiniResponse> handler)
    {
        _handler = handler;
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = Task.Run(AcceptLoop);
    }

    public int Port { get; }

    public string BaseUrl => $"http://127.0.0.1:{Port}";

    private async Task AcceptLoop()
    {
        var connections = new List<Task>();
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                connections.Add(Task.Run(() => Serve(client)));
            }
        }
        catch (OperationCanceledException) { }
        catch (ObjectDisposedException) { }
        catch (SocketException) { }
        await Task.WhenAll(connections);
    }

    private async Task Serve(TcpClient client)
    {
        using var _ = client;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        deadline.CancelAfter(TimeSpan.FromSeconds(10));
        try
        {
            var stream = client.GetStream();
            var request = await ReadRequest(stream, deadline.Token);
            if (request is null) return;
            var response = _handler(request);
            var head = new StringBuilder($"HTTP/1.1 {response.Status} {ReasonPhrase(response.Status)}\r\n");
            foreach (var (k, v) in response.Headers) head.Append($"{k}: {v}\r\n");
            head.Append($"Content-Length: {response.Body.Length}\r\nConnection: close\r\n\r\n");
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head.ToString()), deadline.Token);
            if (request.Method != "HEAD")
            {
                int n = Math.Min(response.DropAfter ?? response.Body.Length, response.Body.Length);
                await stream.WriteAsync(response.Body.AsMemory(0, n), deadline.Token);
            }
            await stream.FlushAsync(deadline.Token);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException) { }
    }

    private static async Task<MiniRequest?> ReadRequest(NetworkStream stream, CancellationToken ct)
    {
        var bytes = new List<byte>();
        var buffer = new byte[1];
        while (bytes.Count < 16384)
        {
            if (await stream.ReadAsync(buffer, ct) == 0) return null;
            bytes.Add(buffer[0]);
            int c = bytes.Count;
            if (c >= 4 && bytes[c - 4] == '\r' && bytes[c - 3] == '\n' && bytes[c - 2] == '\r' && bytes[c - 1] == '\n') break;
        }
        var lines = Encoding.ASCII.GetString(bytes.ToArray()).Split("\r\n");
        var first = lines[0].Split(' ');
        if (first.Length < 3) return null;
        var headers = new Dictionary<string, string>();
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            if (colon > 0) headers[line[..colon].Trim().ToLowerInvariant()] = line[(colon + 1)..].Trim();
        }
        return new MiniRequest(first[0], first[1], headers);
    }

    private static string ReasonPhrase(int status) => status switch
    {
        200 => "OK", 206 => "Partial Content", 302 => "Found", 401 => "Unauthorized", 403 => "Forbidden", 404 => "Not Found",
        416 => "Range Not Satisfiable", _ => "Status",
    };

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _loop.WaitAsync(TimeSpan.FromSeconds(10));
        _stop.Dispose();
    }
}
