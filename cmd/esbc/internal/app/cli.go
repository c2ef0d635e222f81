package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"

	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/cmd/esbc/internal/config"
)

const usage = `usage:
  esbc run [--config FILE]          run the SBC (default FILE: /etc/esbc/esbc.yaml;
                                    with no file at all it runs on an embedded loopback default)
  esbc check-config [--config FILE] validate; exit 0 if valid, else exit 1 with one line per error
  esbc version                      version, commit, Go version
`

// Main runs the command line args (without the program name) and
// returns the exit code. Errors writing to stdout/stderr are dropped: the
// terminal is where they would be reported.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version", "--version", "-v":
		_, _ = fmt.Fprintf(stdout, "esbc %s (commit %s, %s, %s/%s)\n", Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "run", "check-config":
	case "help", "-h", "--help":
		_, _ = fmt.Fprint(stdout, usage)
		return 0
	default:
		_, _ = fmt.Fprintf(stderr, "esbc: unknown command %q\n%s", cmd, usage)
		return 2
	}
	fs := flag.NewFlagSet("esbc "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration file")
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "esbc %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })

	if cmd == "check-config" {
		if _, err := config.Load(*path); err != nil {
			printConfigError(stderr, err)
			return 1
		}
		_, _ = fmt.Fprintf(stdout, "%s: ok\n", *path)
		return 0
	}
	// sipgo's package-level logger is used before our per-UA loggers are
	// in place; keep it quiet (process-wide, set once).
	sip.SetDefaultLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	return Run(context.Background(), Options{ConfigPath: *path, Explicit: explicit, Stderr: stderr})
}

func asErrors(err error, target *config.Errors) bool { return errors.As(err, target) }
