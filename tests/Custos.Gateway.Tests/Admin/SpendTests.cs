using Custos.Gateway.Admin;
using Custos.Ledger;
using Custos.Storage;

namespace Custos.Gateway.Tests.Admin;

/// <summary>
/// The admin API's spend: whole quarter hours from the request totals, whole minutes at the ends from the totals by
/// minute, the seconds left from the entries, adding up to the entries' own sum.
/// </summary>
public sealed class SpendTests : IAsyncLifetime
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "custos-spend-" + Guid.NewGuid().ToString("N"));
    private SqliteStore _store = null!;

    public async Task InitializeAsync()
    {
        _store = await SqliteStore.OpenAsync(_directory);
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var records = new List<ChainedRecord>();
        for (var i = 0; i < 200; i++)
        {
            // Every 7 minutes 13 seconds, across many quarter hours, on three services, one without a service.
            var record = new RequestRecord
            {
                RequestId = "r" + i,
                NodeId = "n1",
                Method = "POST",
                Endpoint = "/v1/chat/completions",
                Timestamp = T0.AddSeconds(i * 433),
                Tenant = "acme",
                Service = (i % 4) switch { 0 => "a", 1 => "b", 2 => "c", _ => null },
                Consumer = "x" + (i % 3),
                Cost = i % 5 == 0 ? null : 0.000123457m * i,
                Currency = "USD",
            };
            records.Add(chain.Append(record));
        }

        await _store.AppendAsync(records);
    }

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(0, 86_400)] // whole slots only
    [InlineData(1, 86_400)] // a second into the first slot
    [InlineData(437, 20_000)] // pieces at both ends
    [InlineData(430, 19_920)] // an entry in the seconds before the first whole minute (433) and one after the last (19,918)
    [InlineData(430, 1_000)] // no whole quarter hour: minutes, and seconds at both ends
    [InlineData(100, 700)] // within one slot: the entries alone
    [InlineData(866, 901)] // across a boundary, no whole slot
    [InlineData(900, 2_700)]
    [InlineData(-3_600, 200_000)] // beyond the ledger on both sides
    public async Task Spend_IsWhatTheEntriesSay_WhereverTheWindowStartsAndEnds(int fromSeconds, int toSeconds)
    {
        var (from, to) = (T0.AddSeconds(fromSeconds), T0.AddSeconds(toSeconds));

        var fromEntries = await _store.GetSpendAsync(from, to);
        var spend = await AdminApi.SpendAsync(_store, from, to, CancellationToken.None);

        Assert.NotEmpty(fromEntries);
        Assert.Equal(fromEntries.OrderBy(p => p.Key, StringComparer.Ordinal), spend.OrderBy(p => p.Key, StringComparer.Ordinal));
    }
}
