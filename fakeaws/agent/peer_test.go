package agent

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// dataPeer is a minimal reliable client on top of the harness: it acks and
// reassembles the agent's output, numbers its own input and retransmits what
// the agent has not acked (the agent refuses data until its target is
// connected). It follows the agent onto new legs after reconnects.
type dataPeer struct {
	t        testing.TB
	m        *mgs
	mu       sync.Mutex
	l        *leg
	nextSeq  int64
	unacked  map[int64][]byte
	sentAt   map[int64]time.Time
	expected int64
	ooo      map[int64][]byte
	oooFlag  map[int64]bool // the ooo entry is a Flag message
	data     []byte
	flags    [][]byte      // Flag payloads, in stream order
	outSeen  map[int64]int // arrivals per output seq
	acks     map[int64]int // agent acks per input seq
	other    []*wire.Frame // frames of other types
	changed  chan struct{}
	noAck    atomic.Bool // stop acking output
	window   int
	stop     chan struct{}
	wg       sync.WaitGroup
}

// newDataPeer takes over leg l after the handshake (input seq 0 was used by
// the HandshakeResponse, output seqs 0 and 1 by the handshake).
func newDataPeer(t testing.TB, m *mgs, l *leg) *dataPeer {
	p := &dataPeer{t: t, m: m, l: l, nextSeq: 1, expected: 2, unacked: map[int64][]byte{}, sentAt: map[int64]time.Time{},
		ooo: map[int64][]byte{}, oooFlag: map[int64]bool{}, outSeen: map[int64]int{}, acks: map[int64]int{}, changed: make(chan struct{}),
		window: 2000, stop: make(chan struct{})}
	p.wg.Add(2)
	go p.readLoop()
	go p.retransmitLoop()
	t.Cleanup(p.close)
	return p
}

func (p *dataPeer) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.wg.Wait()
}

// notify wakes waiters; p.mu must be held.
func (p *dataPeer) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *dataPeer) leg() *leg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.l
}

func (p *dataPeer) readLoop() {
	defer p.wg.Done()
	for {
		l := p.leg()
		select {
		case <-p.stop:
			return
		case nl := <-p.m.legs:
			p.mu.Lock()
			p.l = nl
			p.notify()
			p.mu.Unlock()
		case f := <-l.frames:
			p.handle(l, f)
		}
	}
}

func (p *dataPeer) handle(l *leg, f *wire.Frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.notify()
	switch f.MessageType {
	case wire.TypeOutputStreamData:
		p.outSeen[f.SequenceNumber]++
		if p.noAck.Load() {
			return
		}
		l.send(ackFrame(f))
		if f.SequenceNumber < p.expected {
			return
		}
		p.ooo[f.SequenceNumber] = append([]byte(nil), f.Payload...)
		p.oooFlag[f.SequenceNumber] = f.PayloadType == wire.PayloadFlag
		for {
			b, ok := p.ooo[p.expected]
			if !ok {
				break
			}
			if p.oooFlag[p.expected] {
				p.flags = append(p.flags, b)
			} else {
				p.data = append(p.data, b...)
			}
			delete(p.ooo, p.expected)
			delete(p.oooFlag, p.expected)
			p.expected++
		}
	case wire.TypeAcknowledge:
		a, err := wire.ParseAcknowledge(f.Payload)
		if err != nil {
			p.t.Errorf("agent ack %s: %v", f.Payload, err)
			return
		}
		p.acks[a.AcknowledgedMessageSequenceNumber]++
		delete(p.unacked, a.AcknowledgedMessageSequenceNumber)
	default:
		p.other = append(p.other, f)
	}
}

func (p *dataPeer) retransmitLoop() {
	defer p.wg.Done()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		l := p.l
		var due [][]byte
		for seq, b := range p.unacked {
			if time.Since(p.sentAt[seq]) > 300*time.Millisecond {
				due = append(due, b)
				p.sentAt[seq] = time.Now()
			}
		}
		p.mu.Unlock()
		for _, b := range due {
			l.send(b)
		}
	}
}

// sendMsg sends one input message and keeps it for retransmission.
func (p *dataPeer) sendMsg(pt wire.PayloadType, payload []byte) int64 {
	return p.send(pt, payload, true)
}

// sendOutOfWindow is sendMsg without waiting for room in the send window
// (a flag sent while the agent has stopped acking).
func (p *dataPeer) sendOutOfWindow(pt wire.PayloadType, payload []byte) int64 {
	return p.send(pt, payload, false)
}

func (p *dataPeer) send(pt wire.PayloadType, payload []byte, windowed bool) int64 {
	p.mu.Lock()
	for windowed && len(p.unacked) >= p.window {
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.stop:
			return -1
		case <-time.After(10 * time.Second):
			p.t.Errorf("send window stuck")
			return -1
		}
		p.mu.Lock()
	}
	seq := p.nextSeq
	p.nextSeq++
	_, b := inputFrame(seq, pt, payload)
	p.unacked[seq] = b
	p.sentAt[seq] = time.Now()
	l := p.l
	p.mu.Unlock()
	l.send(b)
	return seq
}

// write sends data as Output messages of at most 1024 bytes.
func (p *dataPeer) write(data []byte) {
	for len(data) > 0 {
		n := min(len(data), wire.MaxPayload)
		if p.sendMsg(wire.PayloadOutput, data[:n]) < 0 {
			return
		}
		data = data[n:]
	}
}

// waitFor waits until cond (called with p.mu held) holds.
func (p *dataPeer) waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.After(d)
	for {
		p.mu.Lock()
		ok, ch := cond(), p.changed
		p.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		case <-time.After(20 * time.Millisecond): // conditions on other state
		}
	}
}

func (p *dataPeer) received() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.data...)
}
