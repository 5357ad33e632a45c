using Custos.Postgres.Tests;
using Custos.Redis.Tests;

namespace Custos.Cluster.Tests;

/// <summary>One Redis and one PostgreSQL, started by the tests on loopback, shared by every test of the collection (each test has its own database and key prefix).</summary>
[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<RedisServerFixture>, ICollectionFixture<PostgresServerFixture>
{
    public const string Name = "cluster";
}
