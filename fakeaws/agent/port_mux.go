package agent

import (
	"errors"
	"fmt"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Mux mode (docs/protocol.md 11.4; the real agent's plugins/port/port_mux.go)
// is an xtaci/smux v1 server over the data channel. The fake agent does not
// serve smux yet (issue 8 brings it), but it must never let a mux session
// pass by accident: a client that sends raw bytes where the real agent reads
// smux frames fails here as it would there (smux's receive loop stops at a
// frame whose version is not 1: ErrInvalidProtocol, and the plugin ends), and
// the fake records it as a violation (docs/fakeaws.md 4.2).

// smux v1 frame header: version (1), cmd (SYN 0, FIN 1, PSH 2, NOP 3),
// length (2, little endian), stream id (4).
const (
	smuxVersion  = 1
	smuxMaxCmdV1 = 3
)

// errMuxUnavailable ends a session whose client does speak smux: the fake
// cannot serve it yet.
var errMuxUnavailable = errors.New("the fake agent does not serve smux (mux mode) yet")

type muxPort struct {
	s    *session
	done chan struct{}
}

func newMuxPort(s *session) *muxPort { return &muxPort{s: s, done: make(chan struct{})} }

// start: the real agent's mux mode dials the target per smux stream, not at
// the start, so nothing happens here.
func (p *muxPort) start() error { return nil }

func (p *muxPort) handle(pt wire.PayloadType, payload []byte) bool {
	if pt != wire.PayloadOutput {
		return true // flags and sizes mean nothing to an smux server
	}
	if len(payload) >= 2 && payload[0] == smuxVersion && payload[1] <= smuxMaxCmdV1 {
		p.s.end(errMuxUnavailable)
		return true
	}
	p.s.violation("error", "raw-bytes-into-mux", fmt.Sprintf(
		"LocalPortForwarding session with client version %s runs in mux mode: the client sent %d raw bytes (first byte %#x) where the agent reads smux v1 frames",
		p.s.clientVersion(), len(payload), firstByte(payload)))
	p.s.end(errors.New("smux: invalid protocol"))
	return true
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func (p *muxPort) connected() bool { return false }
func (p *muxPort) close()          {}
func (p *muxPort) wait()           {}
