using System.Net;
using Custos.Tests;

namespace Custos.Browser.Tests;

/// <summary>The whole chain: a real gateway, a real call through it, and Chromium reading the admin port.</summary>
[Collection(BrowserCollection.Name)]
public sealed class SmokeTests(BrowserFixture browser)
{
    [Fact]
    public async Task Chromium_reads_the_readiness_of_a_real_gateway_after_a_chat_call()
    {
        await using var demo = await DemoGateway.StartAsync("browser-smoke");
        var (status, code, _) = await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, demo.ConsumerKey("support-web"));
        Assert.True(status == HttpStatusCode.OK, $"chat call: {status} {code}");

        var page = await browser.NewPageAsync();
        var response = await page.GotoAsync(new Uri(demo.Gateway.AdminUri, "readyz").ToString());

        Assert.NotNull(response);
        Assert.Equal(200, response.Status);
        var body = await page.Locator("body").InnerTextAsync();
        Assert.Contains("\"status\":\"ready\"", body, StringComparison.Ordinal);
        Assert.Contains("\"policy\":\"confirmed\"", body, StringComparison.Ordinal);
        var screenshot = await browser.ScreenshotAsync(page, "smoke-readyz");
        Assert.True(new FileInfo(screenshot).Length > 0, screenshot);
        browser.AssertNoErrors(page);
    }
}
