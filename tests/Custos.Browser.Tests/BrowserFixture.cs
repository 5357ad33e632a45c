using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Microsoft.Playwright;

namespace Custos.Browser.Tests;

/// <summary>The tests that share one <see cref="BrowserFixture"/>: put <c>[Collection("browser")]</c> on a test class.</summary>
[CollectionDefinition(Name)]
public sealed class BrowserCollection : ICollectionFixture<BrowserFixture>
{
    public const string Name = "browser";
}

/// <summary>
/// One Playwright driver and one headless Debian Chromium for the whole project; each <see cref="NewPageAsync"/> is a
/// fresh browser context, so cookies and storage never leak between tests. Every page's console errors, uncaught
/// exceptions and requests to anywhere but this machine are collected (<see cref="ErrorsOf"/>,
/// <see cref="AssertNoErrors"/>).
/// </summary>
/// <remarks>
/// The browser is <c>$CUSTOS_CHROMIUM</c> when set, else <c>/usr/bin/chromium</c>, else <c>chromium</c> on the PATH
/// (<c>scripts/test-deps.sh</c> installs Debian's). Playwright never downloads a browser: the machines have no internet.
/// </remarks>
public sealed class BrowserFixture : IAsyncLifetime
{
    /// <summary>How long an action, a navigation or an <c>Expect</c> assertion waits before it fails.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Passed to Chromium besides Playwright's own (<c>--headless</c> comes from <c>Headless = true</c>). No sandbox: the
    /// tests run as root. The background-networking flags keep Chromium from calling Google, which the closed network
    /// refuses. Even with them Chromium looks up accounts.google.com and update.googleapis.com at start: the resolver
    /// rule answers every name but loopback's "not found" inside Chromium, so no lookup leaves the machine (and a page
    /// that asks for another host fails at once instead of waiting on DNS).
    /// </summary>
    public static readonly IReadOnlyList<string> ChromiumArgs =
    [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
    ];

    private readonly ConcurrentDictionary<IBrowserContext, PageErrors> _contexts = new();
    private IPlaywright? _playwright;
    private IBrowser? _browser;

    /// <summary>The Chromium this fixture launched.</summary>
    public string ExecutablePath { get; private set; } = "";

    public IPlaywright Playwright => _playwright ?? throw new InvalidOperationException("The browser fixture has not started.");

    /// <summary>The one browser; prefer <see cref="NewPageAsync"/>, which isolates and watches the page.</summary>
    public IBrowser Browser => _browser ?? throw new InvalidOperationException("The browser fixture has not started.");

    /// <summary>Where <see cref="ScreenshotAsync"/> writes: <c>$CUSTOS_SCREENSHOTS</c>, else <c>artifacts/screenshots/</c> in the repository.</summary>
    public static string ScreenshotDirectory => Environment.GetEnvironmentVariable("CUSTOS_SCREENSHOTS") is { Length: > 0 } folder
        ? Path.GetFullPath(folder)
        : Path.Combine(RepositoryRoot(), "artifacts", "screenshots");

    public async Task InitializeAsync()
    {
        ExecutablePath = FindChromium();
        Assertions.SetDefaultExpectTimeout((float)DefaultTimeout.TotalMilliseconds);
        _playwright = await Microsoft.Playwright.Playwright.CreateAsync();
        try
        {
            _browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = ExecutablePath,
                Headless = true,
                ChromiumSandbox = false,
                Args = ChromiumArgs,
                Timeout = 60_000,
            });
        }
        catch (PlaywrightException e)
        {
            _playwright.Dispose();
            _playwright = null;
            throw new InvalidOperationException($"Chromium at {ExecutablePath} did not start under Playwright: {e.Message}", e);
        }
    }

    /// <summary>
    /// A new page in a new browser context (no cookies, no storage) of <paramref name="width"/> x <paramref name="height"/>,
    /// locale en-US and time zone UTC, with <see cref="DefaultTimeout"/> for actions and navigations. Its errors are
    /// collected from now on (and can still be read after the context closes). The context is closed when the fixture
    /// ends; close it earlier with <c>page.Context.CloseAsync()</c> if a test opens many.
    /// </summary>
    public async Task<IPage> NewPageAsync(int width = 1440, int height = 900, string timeZone = "UTC")
    {
        var context = await Browser.NewContextAsync(new BrowserNewContextOptions
        {
            ViewportSize = new ViewportSize { Width = width, Height = height },
            Locale = "en-US",
            TimezoneId = timeZone,
            ServiceWorkers = ServiceWorkerPolicy.Block,
        });
        context.SetDefaultTimeout((float)DefaultTimeout.TotalMilliseconds);
        context.SetDefaultNavigationTimeout((float)DefaultTimeout.TotalMilliseconds);
        var errors = new PageErrors();
        _contexts[context] = errors;
        // Pages the first one opens (popups, target=_blank) report to the same list.
        context.Page += (_, page) => errors.Watch(page);
        var page = await context.NewPageAsync();
        errors.Watch(page); // already watched through context.Page; this only makes sure
        return page;
    }

    /// <summary>
    /// The errors on <paramref name="page"/> (and any page its context opened) so far, oldest first, each one line that
    /// starts with its kind: <c>console.error:</c>, <c>pageerror:</c> (an uncaught exception) or <c>off-machine
    /// request:</c> (the page asked for something not on loopback, which fails here and on CI). The 404 of the
    /// <c>/favicon.ico</c> that Chromium asks every origin for is not counted.
    /// </summary>
    public IReadOnlyList<string> ErrorsOf(IPage page)
        => _contexts.TryGetValue(page.Context, out var errors) ? errors.Snapshot() : [];

    /// <summary>
    /// Fails the test with the list of <paramref name="page"/>'s errors, if any, apart from those containing one of
    /// <paramref name="expected"/> (for example <c>"status of 401"</c> when a test shows a refusal on purpose).
    /// </summary>
    public void AssertNoErrors(IPage page, params string[] expected)
    {
        var unexpected = ErrorsOf(page).Where(e => !expected.Any(x => e.Contains(x, StringComparison.Ordinal))).ToList();
        if (unexpected.Count > 0)
        {
            Assert.Fail($"{unexpected.Count} browser error(s) on {page.Url}:{Environment.NewLine}  " + string.Join(Environment.NewLine + "  ", unexpected));
        }
    }

    /// <summary>
    /// Saves a full-page PNG of <paramref name="page"/> as <c>NAME.png</c> in <see cref="ScreenshotDirectory"/> (a test
    /// artefact; a name is made safe for a file name) and returns its path.
    /// </summary>
    public async Task<string> ScreenshotAsync(IPage page, string name)
    {
        var invalid = Path.GetInvalidFileNameChars();
        var safe = new string([.. name.Select(c => invalid.Contains(c) || char.IsWhiteSpace(c) ? '-' : c)]);
        Directory.CreateDirectory(ScreenshotDirectory);
        var path = Path.Combine(ScreenshotDirectory, safe + ".png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = true, Type = ScreenshotType.Png });
        return path;
    }

    public async Task DisposeAsync()
    {
        if (_browser is not null)
        {
            await _browser.CloseAsync(); // closes every context
            await _browser.DisposeAsync();
        }
        _playwright?.Dispose();
    }

    private static string FindChromium()
    {
        const string Hint = "Install Debian's chromium with scripts/test-deps.sh (as root or with sudo), or set CUSTOS_CHROMIUM to a Chromium executable.";
        if (Environment.GetEnvironmentVariable("CUSTOS_CHROMIUM") is { Length: > 0 } chosen)
        {
            return File.Exists(chosen)
                ? chosen
                : throw new InvalidOperationException($"CUSTOS_CHROMIUM is {chosen}, which does not exist. {Hint}");
        }
        if (File.Exists("/usr/bin/chromium"))
        {
            return "/usr/bin/chromium";
        }
        var onPath = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(folder => Path.Combine(folder, "chromium")).FirstOrDefault(File.Exists);
        return onPath ?? throw new InvalidOperationException($"The browser tests need Chromium, and there is none at /usr/bin/chromium or on the PATH. {Hint}");
    }

    /// <summary>The folder with Custos.slnx above the test assembly.</summary>
    private static string RepositoryRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Custos.slnx")))
            {
                return folder.FullName;
            }
        }
        throw new InvalidOperationException($"No Custos.slnx above {AppContext.BaseDirectory}: set CUSTOS_SCREENSHOTS to a folder for the screenshots.");
    }

    /// <summary>The errors of one browser context's pages; events arrive on Playwright's threads.</summary>
    private sealed class PageErrors
    {
        private readonly List<string> _errors = [];
        private readonly ConditionalWeakTable<IPage, object> _watched = new();

        public void Watch(IPage page)
        {
            if (!_watched.TryAdd(page, page))
            {
                return;
            }
            page.Console += (_, message) =>
            {
                // Chromium asks every origin for /favicon.ico on its own; a 404 there is no error of the page's.
                if (message.Type == "error" && !IsImplicitFavicon(message.Location))
                {
                    // The location is URL:LINE:COLUMN, with no URL for a script the test set itself.
                    var where = message.Location is { Length: > 0 } location && !location.StartsWith(':') ? $" ({location})" : "";
                    Add($"console.error: {message.Text}{where}");
                }
            };
            page.PageError += (_, error) => Add($"pageerror: {error}");
            page.Request += (_, request) =>
            {
                if (!IsOnThisMachine(request.Url))
                {
                    Add($"off-machine request: {request.Method} {request.Url}");
                }
            };
        }

        public IReadOnlyList<string> Snapshot()
        {
            lock (_errors)
            {
                return [.. _errors];
            }
        }

        private void Add(string error)
        {
            lock (_errors)
            {
                _errors.Add(error.ReplaceLineEndings(" | "));
            }
        }

        /// <summary>Whether a console message's location (<c>URL:LINE:COLUMN</c>) is the origin's <c>/favicon.ico</c>.</summary>
        private static bool IsImplicitFavicon(string location)
            => Uri.TryCreate(location, UriKind.Absolute, out var uri) && (uri.AbsolutePath == "/favicon.ico" || uri.AbsolutePath.StartsWith("/favicon.ico:", StringComparison.Ordinal));

        private static bool IsOnThisMachine(string url)
        {
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri))
            {
                return true;
            }
            if (uri.Scheme is not ("http" or "https" or "ws" or "wss"))
            {
                return true; // data:, blob:, about:, chrome-error: and the like never leave the browser
            }
            return uri.IsLoopback || uri.Host == "localhost";
        }
    }
}
