// Command den is a self-hosted realtime WebSocket room gateway.
//
//	den serve [flags]                 run the gateway
//	den loadtest SCENARIO [flags]     load-test den or any WebSocket server
//	den version                       print the version and build info
//
// Every flag has a DEN_ environment variable (--max-message-bytes is
// DEN_MAX_MESSAGE_BYTES); a flag on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, stop, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, errThresholds):
		fmt.Fprintln(os.Stderr, "den:", err)
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "den:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `den is a realtime WebSocket room gateway.

Usage:
  den serve [flags]               run the gateway (den serve -h lists the flags)
  den loadtest SCENARIO [flags]   load-test den or any WebSocket server
                                  (den loadtest lists the scenarios)
  den version                     print the version and how den was built
`

// run dispatches a subcommand. stopSignals restores default signal
// handling, so a second SIGINT during shutdown ends the process at once.
func run(ctx context.Context, stopSignals func(), args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, stopSignals, args[1:], stderr)
	case "loadtest":
		return runLoadtest(ctx, stopSignals, args[1:], stdout, stderr)
	case "version", "--version":
		return printVersion(stdout)
	case "loadtest-worker":
		return loadtestWorker()
	case "help", "-h", "--help":
		fmt.Fprint(stderr, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "den: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
}

// printVersion prints den's version (its module version, or the commit
// it was built from) and how it was built, from the build info the Go
// toolchain stamps into every binary.
func printVersion(w io.Writer) error {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("version: this binary carries no build info")
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	fmt.Fprintf(w, "den %s\n", bi.Main.Version)
	fmt.Fprintf(w, "  go:       %s %s/%s\n", bi.GoVersion, settings["GOOS"], settings["GOARCH"])
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (modified)"
		}
		fmt.Fprintf(w, "  commit:   %s\n  time:     %s\n", rev, settings["vcs.time"])
	}
	fmt.Fprintf(w, "  module:   %s\n", bi.Main.Path)
	return nil
}
