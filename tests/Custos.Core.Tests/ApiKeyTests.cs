using Custos.Identity;

namespace Custos.Core.Tests;

public sealed class ApiKeyTests
{
    [Fact]
    public void Generate_ConsumerKey_HasPrefixLengthAndValidChecksum()
    {
        var key = ApiKey.Generate(ApiKeyKind.Consumer);

        Assert.StartsWith("csk_", key, StringComparison.Ordinal);
        Assert.Equal(ApiKey.Length, key.Length);
        Assert.Equal(ApiKeyFormatError.None, ApiKey.Validate(key, out var kind));
        Assert.Equal(ApiKeyKind.Consumer, kind);
    }

    [Fact]
    public void Generate_AdminKey_IsRecognisedAsAdmin()
    {
        var key = ApiKey.Generate(ApiKeyKind.Admin);

        Assert.StartsWith("cak_", key, StringComparison.Ordinal);
        Assert.Equal(ApiKeyFormatError.None, ApiKey.Validate(key, out var kind));
        Assert.Equal(ApiKeyKind.Admin, kind);
    }

    [Fact]
    public void Validate_EveryOneCharacterTypo_IsRejectedWithoutLookup()
    {
        var key = ApiKey.Generate(ApiKeyKind.Consumer);
        const string alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        var random = new Random(1234);
        for (var position = 4; position < key.Length; position++)
        {
            var chars = key.ToCharArray();
            char replacement;
            do
            {
                replacement = alphabet[random.Next(alphabet.Length)];
            }
            while (replacement == chars[position]);

            chars[position] = replacement;
            Assert.Equal(ApiKeyFormatError.BadChecksum, ApiKey.Validate(new string(chars), out _));
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("sk-proj-abcdef")]
    [InlineData("csk_tooshort")]
    [InlineData("xyz_0123456789012345678901234567890123456")]
    public void Validate_NotACustosKey_IsNotAKey(string presented)
        => Assert.Equal(ApiKeyFormatError.NotAKey, ApiKey.Validate(presented, out _));

    [Fact]
    public void Validate_TransposedCharacters_IsRejected()
    {
        var key = ApiKey.Generate(ApiKeyKind.Consumer);
        var chars = key.ToCharArray();
        var i = Enumerable.Range(4, 30).First(p => chars[p] != chars[p + 1]);
        (chars[i], chars[i + 1]) = (chars[i + 1], chars[i]);

        Assert.Equal(ApiKeyFormatError.BadChecksum, ApiKey.Validate(new string(chars), out _));
    }

    [Fact]
    public void KeyHash_RoundTripsThroughHexAndComparesByValue()
    {
        var key = ApiKey.Generate(ApiKeyKind.Consumer);
        var hash = KeyHash.Of(key);

        Assert.Equal(hash, KeyHash.FromHex(hash.ToHex()));
        Assert.NotEqual(hash, KeyHash.Of(ApiKey.Generate(ApiKeyKind.Consumer)));
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(key))), hash.ToHex());
    }
}
