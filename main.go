// Command ssmproxy carries SSH (and other TCP) over AWS Session Manager.
//
//	Host i-* mi-*
//	    ProxyCommand ssmproxy connect %h %p
//
// It speaks the Session Manager data channel itself: no AWS CLI, no
// session-manager-plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/redact"
	"github.com/ssmproxy/ssmproxy/internal/secretenv"
	"github.com/ssmproxy/ssmproxy/prompt"
	"github.com/ssmproxy/ssmproxy/target"
)

// childStderrDrain bounds the wait, at exit, for children's stderr.
const childStderrDrain = 500 * time.Millisecond

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// ssmproxy's own secrets leave the process environment once read, so
	// no child inherits them: not even those that libraries start with the
	// full environment (the keyring's pass backend, the SDK's default
	// credential_process runner).
	secretenv.Take(secretenv.Own...)
	defer survivePipe()()
	ctx, stop := signalContext()
	defer stop()
	defer startCPUProfile()()
	defer runtimeStatsAtExit()()
	if f := first(args); f == "--version" || f == "-version" {
		args = []string{"version"}
	}
	err := execute(ctx, args)
	// A child's stderr reaches ours through the redactor, asynchronously:
	// let it arrive before our last line (docs/credentials.md 7.1).
	secretenv.Drain(childStderrDrain)
	code := report(ctx, err)
	// A prompt a signal cancelled may still be restoring the terminal in a
	// goroutine nobody waits for; the user's shell must get its echo back.
	prompt.Settle(time.Second)
	return code
}

// report prints one line for a failure and returns the exit code.
func report(ctx context.Context, err error) int {
	if err == nil {
		return exitOK
	}
	if sig := caughtSignal(ctx); sig != 0 {
		return exitSignalBase + sig
	}
	if errors.Is(err, errHelpShown) {
		return exitUsage
	}
	// The one stderr line may carry text from outside the process (an SDK
	// error, a service message): it passes the redactor
	// (docs/credentials.md 7.1).
	fmt.Fprintf(os.Stderr, "ssmproxy: %s\n", redact.String(oneLine(err.Error())))
	var te *target.Error
	if errors.As(err, &te) {
		// A lookup without an answer lists the candidates, one line each.
		for _, l := range te.CandidateLines() {
			fmt.Fprintf(os.Stderr, "  %s\n", redact.String(l))
		}
	}
	return exitCode(err)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func first(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

type sigKey struct{}

// signalContext is cancelled on SIGINT, SIGTERM or SIGHUP; caughtSignal
// tells which.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	holder := new(int)
	ctx = context.WithValue(ctx, sigKey{}, holder)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		select {
		case s := <-ch:
			if n, ok := s.(syscall.Signal); ok {
				*holder = int(n)
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

// survivePipe makes a write to a closed stdout or stderr fail with EPIPE
// instead of killing the process: Go's runtime exits on SIGPIPE from fd 1
// or 2 (status 141, no TerminateSession) unless SIGPIPE is notified
// (os/signal, "SIGPIPE"). When ssh closes the read end of our stdout, the
// data path then takes its normal close: TerminateSession, exit 0, as for
// stdin EOF (docs/protocol.md 9.3). The signal is notified, not ignored,
// so that child processes (credential_process) start with the default
// disposition. Nobody reads the channel: a pending signal is enough, later
// ones are dropped.
func survivePipe() func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGPIPE)
	return func() { signal.Stop(ch) }
}

func caughtSignal(ctx context.Context) int {
	if h, ok := ctx.Value(sigKey{}).(*int); ok && ctx.Err() != nil {
		return *h
	}
	return 0
}

// newLogger builds the diagnostics logger: quiet on stderr by default (the
// final error line is printed by report), more with -v, everything at debug
// level to the log file when one is given (mode 0600). Every record passes
// the redactor (docs/credentials.md 7.1).
func newLogger(verbosity int, logFile string) (*slog.Logger, func(), error) {
	// Nothing but what report prints.
	return newLoggerAt(slog.LevelError+4, verbosity, logFile)
}

// newLoggerAt is newLogger with stderr's level when no -v is given: a
// ProxyCommand stays silent, `forward` (a command people watch) shows
// warnings.
func newLoggerAt(quiet slog.Level, verbosity int, logFile string) (*slog.Logger, func(), error) {
	level := quiet
	switch {
	case verbosity == 1:
		level = slog.LevelInfo
	case verbosity >= 2:
		level = slog.LevelDebug
	}
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("open log file: %w", err)
		}
		w = f
		closeFn = func() { f.Close() }
		level = slog.LevelDebug
		if verbosity == 0 {
			level = slog.LevelInfo
		}
	}
	return slog.New(redact.NewHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))), closeFn, nil
}
