//go:build unix

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/agent"
	"github.com/ssmproxy/ssmproxy/trace"
)

// TestTraceFaultySession (docs/trace.md): "connect --trace FILE" through a
// fake that closes the websocket every 400 ms and drops one of the agent's
// data frames and one of ssmproxy's acks. The trace shows the faults (lost
// legs with their resumes, a retransmission, a duplicate), the summary
// names them, and neither a payload byte nor a secret appears in the file.
func TestTraceFaultySession(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{CloseEvery: 400 * time.Millisecond, AgentQuirks: agent.Quirks{Unpaced: true}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	ts.AddFaults(t,
		&fakeaws.FaultRule{Direction: "client_to_agent", MessageType: "acknowledge", Nth: 30, Action: fakeaws.ActionDrop},
		&fakeaws.FaultRule{Direction: "agent_to_client", MessageType: "output_stream_data", Nth: 35, Action: fakeaws.ActionDrop},
	)
	dir := t.TempDir()
	file := filepath.Join(dir, "session.trace")
	// The payload: a recognisable pattern, 1.5 MiB, sent slowly enough to
	// span several websocket closes.
	pattern := "PAYLOAD-MARKER-7f3a9c-"
	payload := []byte(strings.Repeat(pattern, (1536<<10)/len(pattern)))
	a, _ := json.Marshal([]string{"connect", "--trace", file, fakeaws.DefaultInstance, port})
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(clientEnv(t, ts), envRunArgs+"="+string(a))
	pr, pw := osPipe(t)
	cmd.Stdin = pr
	var stdout lockedBuffer
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for off := 0; off < len(payload); off += 64 << 10 {
			_, _ = pw.Write(payload[off:min(off+64<<10, len(payload))])
			time.Sleep(40 * time.Millisecond)
		}
		// Keep stdin open until the echo is back, then end.
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && stdout.Len() < len(payload) {
			time.Sleep(20 * time.Millisecond)
		}
		pw.Close()
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("connect: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("connect did not finish; stderr: %s", stderr.String())
	}
	if !bytes.Equal(stdout.Bytes(), payload) {
		t.Fatalf("echo: %d bytes back of %d", stdout.Len(), len(payload))
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("trace file: %v, mode %v", err, st.Mode())
	}
	raw, _ := os.ReadFile(file)
	text := string(raw)

	// No payload, no secret.
	forbidden := []string{pattern, base64.StdEncoding.EncodeToString([]byte(pattern + pattern))[:20], "MARKER",
		ts.User.SecretAccessKey, "X-Amz-", "token=", "Token"}
	for _, c := range ts.IAM.Issued() {
		forbidden = append(forbidden, c.SecretAccessKey, c.AccessKeyID)
		if c.SessionToken != "" {
			forbidden = append(forbidden, c.SessionToken[:24])
		}
	}
	for _, f := range forbidden {
		if f != "" && strings.Contains(text, f) {
			t.Errorf("the trace contains %q", f)
		}
	}

	s, err := trace.Summarize(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s.Format(&out)
	t.Logf("summary:\n%s", out.String())
	if len(s.LegsLost) < 2 || s.ResumeCalls < len(s.LegsLost) {
		t.Errorf("legs lost %d, ResumeSession calls %d: the closes are not in the trace", len(s.LegsLost), s.ResumeCalls)
	}
	for _, l := range s.LegsLost[:len(s.LegsLost)-1] {
		if l.Repaired <= 0 {
			t.Errorf("a lost leg at %s has no resume", l.At)
		}
	}
	if s.DuplicatesIn == 0 && s.Retransmits == 0 {
		t.Error("neither a duplicate (the dropped ack) nor a retransmission is in the trace")
	}
	if s.BytesOut != int64(len(payload)) || s.BytesIn != int64(len(payload)) {
		t.Errorf("stream bytes %d out, %d in; want %d each", s.BytesOut, s.BytesIn, len(payload))
	}
	if len(s.Sessions) != 1 || len(s.CredentialEvents) == 0 || s.End == "" {
		t.Errorf("sessions %q, credential events %d, end %q", s.Sessions, len(s.CredentialEvents), s.End)
	}
	for _, want := range []string{"reconnects: ", "resumed after", "retransmissions: ", "longest stall"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and a reader of Len.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Bytes()
}

func osPipe(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}
