package server_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/server"
)

// chromiumPath is where Debian's chromium package puts the browser; CI
// installs it and sets DEN_REQUIRE_BROWSER=1 so that a missing one fails.
const chromiumPath = "/usr/bin/chromium"

// TestDemoInBrowser drives the demo page at GET / in headless Chromium:
// two tabs chat in one room, one reloads and gets the history back, then
// den restarts on the same address and data folder and both tabs
// reconnect by themselves, with no line shown twice.
func TestDemoInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("DEN_REQUIRE_BROWSER") == "1" {
			t.Fatalf("DEN_REQUIRE_BROWSER=1 but no browser: %v", err)
		}
		t.Skipf("no browser at %s (apt-get install chromium); set DEN_REQUIRE_BROWSER=1 to fail instead", chromiumPath)
	}
	data := t.TempDir()
	srv := startNode(t, data, "127.0.0.1:0")
	addr := srv.Addr().String()
	base := "http://" + addr + "/"

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	ann, cancelAnn := chromedp.NewContext(ctx)
	defer cancelAnn()
	do(t, ann, chromedp.Navigate(base)) // starts the browser
	bob, cancelBob := chromedp.NewContext(ann)
	defer cancelBob()

	// Both join, each sees the other's message and two online.
	join(t, ann, base, "den-demo", "ann")
	join(t, bob, base, "den-demo", "bob")
	for _, tab := range []context.Context{ann, bob} {
		waitFor(t, tab, "two online", online(2))
	}
	say(t, ann, "hello bob")
	say(t, bob, "hello ann")
	for _, tab := range []context.Context{ann, bob} {
		waitFor(t, tab, "both messages", shown("ann: hello bob", "bob: hello ann"))
	}

	// ann reloads and joins again: the history comes back.
	do(t, ann, chromedp.Reload())
	join(t, ann, base, "den-demo", "ann")
	waitFor(t, ann, "the history after a reload", shown("ann: hello bob", "bob: hello ann")+" && "+online(2))
	expectMessages(t, ann, "ann: hello bob", "bob: hello ann")
	waitFor(t, bob, "ann to leave and come back", noticed("ann left")+" && "+online(2))
	say(t, ann, "after reload")
	for _, tab := range []context.Context{ann, bob} {
		waitFor(t, tab, "the message after the reload", shown("after reload"))
	}

	// den restarts: the sockets get 1012, and the tabs reconnect to the new
	// node on the same address with the same data.
	stopNode(t, srv)
	for _, tab := range []context.Context{ann, bob} {
		waitFor(t, tab, "a tab to notice the restart", `document.getElementById("status").dataset.state !== "open"`)
	}
	startNode(t, data, addr)
	for _, tab := range []context.Context{ann, bob} {
		waitFor(t, tab, "the tab back after the restart", online(2))
	}
	say(t, bob, "after restart")
	for _, tab := range []context.Context{ann, bob} {
		waitFor(t, tab, "the message after the restart", shown("after restart"))
		expectMessages(t, tab, "ann: hello bob", "bob: hello ann", "ann: after reload", "bob: after restart")
	}
}

// expectMessages fails the test unless the tab shows exactly the chat
// lines want, in order, each with its own id.
func expectMessages(t *testing.T, tab context.Context, want ...string) {
	t.Helper()
	got := run(t, tab, chromedp.Evaluate[[]string](messagesJS))
	ids := run(t, tab, chromedp.Evaluate[int](`new Set([...document.querySelectorAll("#log [data-id]")].map(p => p.dataset.id)).size`))
	if fmt.Sprint(got) != fmt.Sprint(want) || ids != len(got) {
		t.Fatalf("the tab shows %q (%d distinct ids), want %q, each once", got, ids, want)
	}
}

// messagesJS lists the chat lines on a page as "user: text".
const messagesJS = `[...document.querySelectorAll("#log [data-id]")].map(p => p.querySelector(".who").textContent + ": " + p.lastChild.textContent)`

// shown is a JS condition: each of lines (or a line ending in it) is on the page.
func shown(lines ...string) string {
	cond := "true"
	for _, l := range lines {
		cond += fmt.Sprintf(" && (%s).some(m => m === %q || m.endsWith(%q))", messagesJS, l, ": "+l)
	}
	return "(" + cond + ")"
}

// noticed is a JS condition: a join or leave line starting with prefix is on
// the page.
func noticed(prefix string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("#log .sys")].some(p => p.textContent.startsWith(%q))`, prefix)
}

// online is a JS condition: the page is in its room and shows n online.
func online(n int) string {
	return fmt.Sprintf(`(document.getElementById("status").dataset.state === "open" && document.getElementById("online").textContent === "%d")`, n)
}

// startNode starts a node on addr with data. Binding an address that a
// node just let go of may fail for a moment, so a listen error is retried
// until a deadline.
func startNode(t *testing.T, data, addr string) *server.Server {
	t.Helper()
	srv, err := server.New(server.Config{Data: data, Gateway: gateway.Config{Listen: addr}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for err = srv.Start(); err != nil; err = srv.Start() {
		if time.Now().After(deadline) {
			t.Fatalf("start on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { stopNode(t, srv) })
	return srv
}

func stopNode(t *testing.T, srv *server.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// do runs steps on the tab; run runs one action and returns its value.
func do(t *testing.T, tab context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tab, steps...); err != nil {
		t.Fatal(err)
	}
}

func run[T any](t *testing.T, tab context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(tab, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// join opens the demo if the tab is elsewhere and joins room as user.
func join(t *testing.T, tab context.Context, base, room, user string) {
	t.Helper()
	if run(t, tab, chromedp.Location()) != base {
		do(t, tab, chromedp.Navigate(base))
	}
	do(t, tab,
		chromedp.WaitVisible(chromedp.ID("join")),
		chromedp.SetValue(chromedp.ID("room"), room),
		chromedp.SetValue(chromedp.ID("user"), user),
		chromedp.Click(chromedp.ID("join")),
	)
	waitFor(t, tab, "joined "+room, `document.getElementById("status").dataset.state === "open"`)
}

// say sends text from the tab.
func say(t *testing.T, tab context.Context, text string) {
	t.Helper()
	do(t, tab,
		chromedp.WaitEnabled(chromedp.ID("text")),
		chromedp.SetValue(chromedp.ID("text"), text),
		chromedp.Click(chromedp.ID("send")),
	)
}

// waitFor polls the JS condition cond on the tab until it holds, for up
// to 15 s; on failure it reports what the page shows.
func waitFor(t *testing.T, tab context.Context, what, cond string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	if err == nil {
		return
	}
	page, _ := chromedp.Run(tab, chromedp.Evaluate[string](`[document.getElementById("status").textContent,
		"online " + document.getElementById("online").textContent,
		...[...document.getElementById("log").children].map(p => p.textContent)].join(" | ")`))
	t.Fatalf("waiting for %s: %v; the page shows: %s", what, err, page)
}
