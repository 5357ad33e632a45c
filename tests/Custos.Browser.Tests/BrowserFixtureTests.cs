using Microsoft.Playwright;
using Xunit.Sdk;

namespace Custos.Browser.Tests;

/// <summary>What the console tests rely on in <see cref="BrowserFixture"/>: errors are caught, pages do not share state.</summary>
[Collection(BrowserCollection.Name)]
public sealed class BrowserFixtureTests(BrowserFixture browser)
{
    /// <summary>An origin on loopback that Playwright serves itself (nothing listens on port 9).</summary>
    private const string Origin = "http://127.0.0.1:9";

    [Fact]
    public async Task Console_errors_uncaught_exceptions_and_off_machine_requests_are_collected()
    {
        var page = await browser.NewPageAsync();
        await page.SetContentAsync("""
            <script>
              console.error("boom in the console");
              console.log("not an error");
              setTimeout(() => { throw new Error("boom uncaught"); }, 0);
            </script>
            <img src="http://custos-test.invalid/logo.png">
            """);

        var errors = await WaitForErrorsAsync(page, 3);
        Assert.Contains(errors, e => e.StartsWith("console.error: boom in the console", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("pageerror: ", StringComparison.Ordinal) && e.Contains("boom uncaught", StringComparison.Ordinal));
        Assert.Contains("off-machine request: GET http://custos-test.invalid/logo.png", errors);
        Assert.DoesNotContain(errors, e => e.Contains("not an error", StringComparison.Ordinal));

        var failure = Assert.ThrowsAny<XunitException>(() => browser.AssertNoErrors(page));
        Assert.Contains("boom in the console", failure.Message, StringComparison.Ordinal);
        // Expected errors can be let through, all of them here.
        browser.AssertNoErrors(page, "boom", "custos-test.invalid");
    }

    [Fact]
    public async Task Each_page_starts_with_no_cookies_and_no_storage()
    {
        var first = await PageOnOriginAsync();
        await first.EvaluateAsync("""
            () => {
              sessionStorage.setItem("key", "first");
              localStorage.setItem("key", "first");
              document.cookie = "key=first";
            }
            """);
        Assert.Equal("first", await first.EvaluateAsync<string>("() => sessionStorage.getItem('key')"));

        var second = await PageOnOriginAsync();
        Assert.Null(await second.EvaluateAsync<string?>("() => sessionStorage.getItem('key')"));
        Assert.Null(await second.EvaluateAsync<string?>("() => localStorage.getItem('key')"));
        Assert.Equal("", await second.EvaluateAsync<string>("() => document.cookie"));
        Assert.Equal(1440, second.ViewportSize?.Width);
        browser.AssertNoErrors(first);
        browser.AssertNoErrors(second);
    }

    private async Task<IPage> PageOnOriginAsync()
    {
        var page = await browser.NewPageAsync();
        await page.RouteAsync($"{Origin}/**", route => route.FulfillAsync(new RouteFulfillOptions
        {
            ContentType = "text/html",
            Body = "<!doctype html><title>origin</title><link rel=icon href=data:,>",
        }));
        await page.GotoAsync($"{Origin}/");
        return page;
    }

    /// <summary>The page's errors once there are at least <paramref name="count"/> (events arrive asynchronously).</summary>
    private async Task<IReadOnlyList<string>> WaitForErrorsAsync(IPage page, int count)
    {
        var deadline = DateTime.UtcNow + BrowserFixture.DefaultTimeout;
        while (browser.ErrorsOf(page).Count < count && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        return browser.ErrorsOf(page);
    }
}
