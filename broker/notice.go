package broker

import (
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// notifier writes the user-facing lines (the connect-time deadline, the
// warnings before it, "waiting for another ssmproxy process") to Notice,
// which is stderr: in a ProxyCommand ssh shows it above the session, and
// stdout belongs to the SSH stream (docs/credentials.md 5.8, 5.9). Every line also
// goes to the log.
type notifier struct {
	w   io.Writer
	log *slog.Logger

	waitOnce sync.Once
}

// line writes one line.
func (n *notifier) line(s string) {
	s = redact.String(s)
	n.log.Warn(s)
	_, _ = fmt.Fprintf(n.w, "ssmproxy: %s\n", s)
}

// waiting returns the hook a lock calls when it has waited a while: the one
// "waiting for another ssmproxy process" line per process, whichever lock it
// is (docs/credentials.md 5.6, step 3).
func (n *notifier) waiting(activity string) func() {
	return func() {
		n.waitOnce.Do(func() {
			n.line(fmt.Sprintf("waiting for another ssmproxy process to %s…", activity))
		})
	}
}
