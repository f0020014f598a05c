package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// TestPluginPortForwarding: AWS-StartPortForwardingSession through the
// official plugin to an echo service behind the fake agent. With the
// default agent (3.3.1142.0) the plugin runs in mux mode (agent version
// above 3.0.196.0, its version.DoesAgentSupportTCPMultiplexing) and
// speaks smux to the fake agent's smux server: several TCP connections at
// once through its one local port. With an agent reporting 3.0.100.0 it
// runs in basic mode, one connection at a time, DisconnectToPort between
// them. Every byte is echoed back and compared.
func TestPluginPortForwarding(t *testing.T) {
	pluginBin(t)
	t.Run("mux", func(t *testing.T) {
		f := startFake(t)
		echo := fakeaws.Listen(t, fakeaws.Echo)
		lport := forwardThroughPlugin(t, f, target, echo)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if err := echoRoundTrip(lport, 256<<10); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// A connection after the parallel ones: the listener stays up.
		if err := echoRoundTrip(lport, 64<<10); err != nil {
			t.Error(err)
		}
		var ss []fakeaws.SessionInfo
		_ = f.getJSON("/_fake/sessions", &ss)
		t.Logf("sessions %+v", ss)
		quiet(t, f) // the smux stream closes, before the SIGINT (basic below)
		logViolations(t, f)
	})
	t.Run("basic", func(t *testing.T) {
		f := startFake(t)
		const old = "i-0fedcba9876543210"
		if err := f.post("/_fake/targets", `{"ID":"`+old+`","Connected":true,"AgentVersion":"3.0.100.0"}`); err != nil {
			t.Fatal(err)
		}
		echo := fakeaws.Listen(t, fakeaws.Echo)
		lport := forwardThroughPlugin(t, f, old, echo)
		for i := 0; i < 3; i++ {
			if err := echoRoundTrip(lport, 128<<10); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
		// Let the plugin send its DisconnectToPort for the last connection
		// before the cleanup's SIGINT: its reader and its signal handler
		// number their flags from one unguarded counter, and a SIGINT
		// right after a close can give both flags the same sequence
		// number (retransmission-differs; docs/fakeaws.md section 10,
		// limitation 4).
		quiet(t, f)
		logViolations(t, f)
	})
}

// forwardThroughPlugin starts the plugin on AWS-StartPortForwardingSession
// from a free local port to portNumber on target and returns the local
// port once the plugin says it listens.
func forwardThroughPlugin(t *testing.T, f *fake, tgt, portNumber string) string {
	t.Helper()
	lport, err := rig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	out := pluginCommand(t, f.environ(), "-document", "AWS-StartPortForwardingSession",
		"-param", "portNumber="+portNumber, "-param", "localPortNumber="+lport, tgt)
	want := "Port " + lport + " opened"
	if !fakeaws.WaitFor(20*time.Second, func() bool { return strings.Contains(out.String(), want) }) {
		t.Fatalf("the plugin did not open port %s: %s", lport, out)
	}
	return lport
}

// echoRoundTrip sends size random bytes through port and reads them back
// through an echo service, comparing checksums.
func echoRoundTrip(port string, size int) error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		return err
	}
	werr := make(chan error, 1)
	go func() { _, err := c.Write(data); werr <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echo checksum %x, want %x", sha256.Sum256(got), sha256.Sum256(data))
	}
	return nil
}

// quiet waits until the plugin has sent nothing new for 300 ms.
func quiet(t *testing.T, f *fake) {
	t.Helper()
	last, since := int64(-1), time.Now()
	if !fakeaws.WaitFor(10*time.Second, func() bool {
		n := f.stats().Frames["client_to_agent"].DataMessages
		if n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) > 300*time.Millisecond
	}) {
		t.Fatal("the plugin kept sending")
	}
}
