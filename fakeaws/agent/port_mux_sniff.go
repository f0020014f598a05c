package agent

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// The smux v1 frame header (xtaci/smux frame.go): version (1 byte), cmd
// (SYN 0, FIN 1, PSH 2, NOP 3; UPD 4 exists for version 2), length (2 bytes,
// little endian), stream id (4 bytes, little endian). Only PSH carries
// length bytes of data; UPD is followed by 8 bytes whatever its length says;
// SYN, FIN and NOP carry nothing.
const (
	smuxHeaderSize = 8
	smuxVersion    = 1
	smuxCmdSYN     = 0
	smuxCmdFIN     = 1
	smuxCmdPSH     = 2
	smuxCmdNOP     = 3
	smuxCmdUPD     = 4
	smuxUPDSize    = 8
	// maxTrackedStreams bounds the sniffer's map of client-opened streams.
	maxTrackedStreams = 1 << 16
)

// muxSniffer follows the client's smux byte stream exactly as smux's recvLoop
// parses it (session.go in xtaci/smux v1.5.15), across Output boundaries,
// which mean nothing in mux mode. It records what the real agent's smux
// server would choke on (docs/fakeaws.md 4.3) and feeds the buffered-bytes
// account. It only observes: the bytes go to the real smux server unchanged,
// which fails (or not) by itself. Reader goroutine only.
type muxSniffer struct {
	violation     func(severity, code, detail string)
	acct          *muxAccount
	clientVersion func() string

	hdr    [smuxHeaderSize]byte
	hn     int    // header bytes collected
	skip   int    // data bytes of the current frame still to come
	psh    bool   // the data being skipped is PSH data (accounted)
	sid    uint32 // stream of the current frame
	frames int64  // complete headers seen
	broken bool   // smux stopped parsing: nothing after this matters
	seen   map[string]bool
	open   map[uint32]bool // streams the client opened and has not finished
}

// once runs f the first time code is seen in this session, so a client
// repeating a mistake is reported once, not per frame.
func (m *muxSniffer) once(code string, f func()) {
	if m.seen == nil {
		m.seen = map[string]bool{}
	}
	if !m.seen[code] {
		m.seen[code] = true
		f()
	}
}

func (m *muxSniffer) warn(code, detail string) {
	m.once(code, func() { m.violation("warning", code, detail) })
}

func (m *muxSniffer) feed(b []byte) {
	for len(b) > 0 && !m.broken {
		if m.skip > 0 {
			n := min(m.skip, len(b))
			if m.psh {
				m.acct.pushed(m.sid, n)
			}
			m.skip -= n
			b = b[n:]
			continue
		}
		n := copy(m.hdr[m.hn:], b)
		m.hn += n
		b = b[n:]
		if m.hn == smuxHeaderSize {
			m.hn = 0
			m.header()
		}
	}
}

// header applies one complete frame header.
func (m *muxSniffer) header() {
	ver, cmd := m.hdr[0], m.hdr[1]
	length := int(binary.LittleEndian.Uint16(m.hdr[2:]))
	sid := binary.LittleEndian.Uint32(m.hdr[4:])
	first := m.frames == 0
	m.frames++
	if ver != smuxVersion || cmd > smuxCmdUPD {
		m.broken = true
		switch {
		case ver == 2 && cmd <= smuxCmdUPD:
			m.violation("error", "smux-version-2", fmt.Sprintf(
				"smux frame of protocol version 2 (cmd %d, stream %d): the agent's smux server speaks version 1 only and stops with ErrInvalidProtocol",
				cmd, sid))
		case first:
			m.violation("error", "raw-bytes-into-mux", fmt.Sprintf(
				"LocalPortForwarding session with client version %s runs in mux mode: the client's first bytes %q are not an smux v1 frame header, the agent's smux server stops with ErrInvalidProtocol",
				m.clientVersion(), m.hdr[:]))
		default:
			m.violation("error", "smux-invalid-frame", fmt.Sprintf(
				"smux frame %d has version %d and cmd %d (want version 1, cmd 0..3): the agent's smux server stops with ErrInvalidProtocol",
				m.frames, ver, cmd))
		}
		return
	}
	if cmd != smuxCmdPSH && length != 0 {
		// smux reads no data after SYN, FIN, NOP (or more than 8 bytes after
		// UPD): the length bytes are parsed as the next header.
		m.warn("smux-length-on-control-frame", fmt.Sprintf(
			"smux cmd %d with length %d: the agent's smux server ignores the length and reads the next bytes as a frame header", cmd, length))
	}
	if m.open == nil {
		m.open = map[uint32]bool{}
	}
	switch cmd {
	case smuxCmdSYN:
		if m.open[sid] {
			m.warn("smux-duplicate-syn", fmt.Sprintf(
				"SYN for stream %d, which is already open: the agent's smux server ignores it and dials nothing", sid))
		} else if len(m.open) < maxTrackedStreams {
			m.open[sid] = true
			m.acct.opened(sid)
		}
	case smuxCmdFIN:
		if m.open[sid] {
			delete(m.open, sid)
			m.acct.clientFinished(sid)
		}
	case smuxCmdPSH:
		if !m.open[sid] && len(m.open) < maxTrackedStreams {
			m.warn("smux-data-for-unknown-stream", fmt.Sprintf(
				"PSH of %d bytes for stream %d, which the client never opened or already finished: the agent's smux server drops them", length, sid))
		}
		m.sid, m.skip, m.psh = sid, length, true
	case smuxCmdUPD:
		m.warn("smux-upd-in-v1", fmt.Sprintf(
			"UPD (a version 2 command) in a version 1 frame for stream %d: the agent's smux server applies it as a window update", sid))
		m.sid, m.skip, m.psh = sid, smuxUPDSize, false
	case smuxCmdNOP:
	}
}

// muxAccount estimates the client bytes held inside the agent's smux server
// (docs/fakeaws.md 4.3): PSH data bytes written toward the server for a
// stream it still has, minus what the stream copies have handed to the
// target; a stream the agent closes takes its unread bytes with it (smux
// drops them and returns their tokens). Frame headers are not counted. The
// bytes sitting in the socket between the agent's write and smux's read are
// included, and so is the Output batch being written (up to 64 KiB), so the
// figure can exceed smux's 4 MiB receive buffer by those two amounts.
type muxAccount struct {
	mu       sync.Mutex
	streams  map[uint32]*streamAcct
	buffered int64
	stats    *Stats
}

type streamAcct struct {
	pushed, read int64
	agentClosed  bool
	clientFIN    bool
}

func newMuxAccount(st *Stats) *muxAccount {
	return &muxAccount{streams: map[uint32]*streamAcct{}, stats: st}
}

func (a *muxAccount) opened(sid uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.streams[sid]; !ok {
		a.streams[sid] = &streamAcct{}
	}
}

func (a *muxAccount) pushed(sid uint32, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.streams[sid]
	if s == nil || s.agentClosed {
		return // smux drops data for streams it does not have
	}
	s.pushed += int64(n)
	a.add(int64(n))
}

func (a *muxAccount) read(sid uint32, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.streams[sid]; s != nil && !s.agentClosed {
		s.read += int64(n)
		a.add(-int64(n))
	}
}

// agentClosed drops what the stream still held; the entry stays until the
// client finishes the stream too, so that late data is not counted.
func (a *muxAccount) agentClosed(sid uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.streams[sid]
	if s == nil || s.agentClosed {
		return
	}
	s.agentClosed = true
	a.add(-(s.pushed - s.read))
	if s.clientFIN {
		delete(a.streams, sid)
	}
}

func (a *muxAccount) clientFinished(sid uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.streams[sid]; s != nil {
		s.clientFIN = true
		if s.agentClosed {
			delete(a.streams, sid)
		}
	}
}

// add changes the buffered total and raises the peak; a.mu must be held.
func (a *muxAccount) add(n int64) {
	a.buffered += n
	a.stats.MuxBuffered.Store(a.buffered)
	if a.buffered > a.stats.MuxBufferedPeak.Load() {
		a.stats.MuxBufferedPeak.Store(a.buffered)
	}
}
