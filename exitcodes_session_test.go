package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm"
)

// TestSessionEndExitCodes: how the data path's own endings map to exit
// codes, wrapped or not.
func TestSessionEndExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{&ssm.NoProgressError{SessionID: "s", Unacked: 3, Silence: 3 * time.Minute}, exitChannelLost},
		{fmt.Errorf("connect: %w", &ssm.NoProgressError{}), exitChannelLost},
		{&ssm.PortForwardingError{Document: ssm.DocumentPortForwarding}, exitUsage},
		{&ssm.PortForwardingError{SessionID: "s", Document: "Custom-Forwarding"}, exitUsage},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("%T %v: exit %d, want %d", c.err, c.err, got, c.want)
		}
	}
}
