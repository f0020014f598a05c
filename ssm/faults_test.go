package ssm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/agent"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// echoTransfer writes size random bytes through the echo target while
// reading them back, and requires the exact byte stream back. during runs
// concurrently with the transfer (fault injection).
func echoTransfer(t *testing.T, s *ssm.Session, size int, during func()) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for off := 0; off < len(data); off += 64 << 10 {
			end := min(off+64<<10, len(data))
			if _, err := s.Write(data[off:end]); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
	}()
	stop := make(chan struct{})
	if during != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait := 50 * time.Millisecond
			for {
				select {
				case <-stop:
					return
				case <-time.After(wait):
					during()
					wait = 250 * time.Millisecond
				}
			}
		}()
	}
	got := make([]byte, len(data))
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(s, got); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read back: %v (session err %v)", err, s.Err())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("transfer stalled: %+v", s.Stats())
	case <-stalled(s):
		t.Fatalf("transfer stalled for 20 s: %+v", s.Stats())
	}
	close(stop)
	wg.Wait()
	if !bytes.Equal(got, data) {
		t.Fatalf("byte stream differs")
	}
}

// stalled closes when the session has received nothing new for 20 s.
func stalled(s *ssm.Session) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		last, since := int64(-1), time.Now()
		for {
			time.Sleep(500 * time.Millisecond)
			st := s.Stats()
			if st.BytesIn != last {
				last, since = st.BytesIn, time.Now()
			} else if time.Since(since) > 20*time.Second {
				close(ch)
				return
			}
			select {
			case <-s.Done():
				return
			default:
			}
		}
	}()
	return ch
}

func startSession(t *testing.T, ts *fakeaws.TestServer, port string, mod func(*ssm.Config)) (*ssm.Session, error) {
	t.Helper()
	cfg := ts.AWSConfig(nil)
	c := ssm.Config{
		Target: fakeaws.DefaultInstance, Parameters: map[string][]string{"portNumber": {port}},
		AWS: fakeAWS(ts, cfg), HandshakeTimeout: 20 * time.Second,
	}
	if mod != nil {
		mod(&c)
	}
	s, err := ssm.Start(fakeaws.Ctx(t), c)
	if s != nil {
		// Closed even when the test did not expect a session: a leaked one
		// would keep the fake's connections open and hang the cleanup.
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

func mustStart(t *testing.T, ts *fakeaws.TestServer, port string, mod func(*ssm.Config)) *ssm.Session {
	t.Helper()
	s, err := startSession(t, ts, port, mod)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// Loss, duplication and reordering in both directions, against the real
// agent's head-only resend: the byte stream must come back exact.
func TestStreamUnderFaults(t *testing.T) {
	cases := []struct {
		name  string
		rules []fakeaws.FaultRule
	}{
		{"loss", []fakeaws.FaultRule{
			{Direction: "agent_to_client", MessageType: "output_stream_data", Every: 97, Action: fakeaws.ActionDrop},
			{Direction: "client_to_agent", MessageType: "input_stream_data", Every: 89, Action: fakeaws.ActionDrop},
			{Direction: "client_to_agent", MessageType: "acknowledge", Every: 83, Action: fakeaws.ActionDrop},
			{Direction: "agent_to_client", MessageType: "acknowledge", Every: 79, Action: fakeaws.ActionDrop},
		}},
		{"duplication", []fakeaws.FaultRule{
			{Direction: "agent_to_client", MessageType: "output_stream_data", Every: 7, Action: fakeaws.ActionDuplicate},
			{Direction: "client_to_agent", MessageType: "input_stream_data", Every: 5, Action: fakeaws.ActionDuplicate},
		}},
		{"reordering", []fakeaws.FaultRule{
			{Direction: "agent_to_client", MessageType: "output_stream_data", Action: fakeaws.ActionReorder, Window: 8, SeqMin: ptr(int64(2))},
			{Direction: "client_to_agent", MessageType: "input_stream_data", Action: fakeaws.ActionReorder, Window: 8, SeqMin: ptr(int64(1))},
		}},
		{"delay", []fakeaws.FaultRule{
			{Direction: "agent_to_client", MessageType: "output_stream_data", Every: 50, Action: fakeaws.ActionDelay, Delay: fakeaws.Duration(150 * time.Millisecond)},
		}},
	}
	// Head-only resend unpaced, and the realistic agent (head-only, paced
	// 1 KiB + 1 ms: the default agent.Quirks) with less data.
	agents := []struct {
		name   string
		quirks agent.Quirks
		size   int
	}{
		{"unpaced", agent.Quirks{Unpaced: true}, 2 << 20},
		{"realistic", agent.Quirks{}, 512 << 10},
	}
	for _, a := range agents {
		for _, c := range cases {
			name := c.name
			if a.name != "unpaced" {
				name = a.name + "/" + c.name
			}
			t.Run(name, func(t *testing.T) {
				ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: a.quirks})
				port := fakeaws.Listen(t, fakeaws.Echo)
				s := mustStart(t, ts, port, nil)
				for i := range c.rules {
					if err := ts.AddFault(&c.rules[i]); err != nil {
						t.Fatal(err)
					}
				}
				echoTransfer(t, s, a.size, nil)
				st := ts.Stats()
				if st.FaultsActed == 0 {
					t.Fatal("no fault fired")
				}
				t.Logf("faults %d, client %+v, relay %+v %+v", st.FaultsActed, s.Stats().Sender, *st.Frames["client_to_agent"], *st.Frames["agent_to_client"])
			})
		}
	}
}

// The service recycles the client leg (close 1000 "Bye") or drops it
// abruptly, repeatedly, mid-transfer. Frames sent toward an absent leg are
// lost (MGS drops them), so recovery rests on retransmission both ways. The
// real agent resends only its oldest unacked message per 100 ms tick, so k
// lost messages take k ticks: the realistic case runs paced (about 1 MB/s,
// as the real agent), the bulk case with an agent that resends every expired
// message.
func TestStreamAcrossReconnects(t *testing.T) {
	type variant struct {
		name   string
		quirks agent.Quirks
		size   int
	}
	for _, v := range []variant{
		{"realistic-agent", agent.Quirks{}, 512 << 10},
		{"bulk", agent.Quirks{Unpaced: true, ResendAllExpired: true}, 16 << 20},
	} {
		for _, code := range []int{1000, 0} {
			name := v.name + "/" + map[int]string{1000: "bye", 0: "reset"}[code]
			t.Run(name, func(t *testing.T) {
				ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: v.quirks})
				port := fakeaws.Listen(t, fakeaws.Echo)
				s := mustStart(t, ts, port, nil)
				start := time.Now()
				echoTransfer(t, s, v.size, func() { _ = ts.CloseLeg(s.ID(), "client", code, "Bye") })
				st := s.Stats()
				if st.Reconnects == 0 {
					t.Fatal("no reconnect happened")
				}
				api := ts.Stats().API["ResumeSession"]
				t.Logf("%s: reconnects %d, ResumeSession %v, retransmits %d, agent %v", time.Since(start).Round(time.Millisecond),
					st.Reconnects, api, st.Sender.Retransmits, ts.AgentStats(s.ID()))
				if api["200"] != st.Reconnects {
					t.Fatalf("ResumeSession %v for %d reconnects", api, st.Reconnects)
				}
			})
		}
	}
}

// The agent's leg goes away three times under every MGS publication variant
// (docs/fakeaws.md 4.1), with the ideal agent and the realistic one
// (head-only resend, paced): pause is a hint (docs/protocol.md 8.8), so
// nothing is lost and nothing waits for a start_publication that never
// comes. The fake's counts show what the client leg was told.
func TestAgentLegOutage(t *testing.T) {
	agents := []struct {
		name   string
		quirks agent.Quirks
		size   int
	}{
		{"ideal", agent.Quirks{Unpaced: true, ResendAllExpired: true}, 16 << 20},
		{"realistic", agent.Quirks{}, 1 << 20},
	}
	for _, a := range agents {
		for _, pub := range []fakeaws.Publication{fakeaws.PublicationAlways, fakeaws.PublicationPauseOnly, fakeaws.PublicationNever} {
			for _, hdr := range []fakeaws.PublicationHeaders{fakeaws.HeadersMinimal, fakeaws.HeadersFull} {
				t.Run(a.name+"/"+string(pub)+"/"+string(hdr), func(t *testing.T) {
					ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: a.quirks, Publication: pub, PublicationHeaders: hdr})
					port := fakeaws.Listen(t, fakeaws.Echo)
					s := mustStart(t, ts, port, nil)
					closes := 0
					echoTransfer(t, s, a.size, func() {
						if closes < 3 {
							closes++
							_ = ts.CloseLeg(s.ID(), "agent", 1000, "Bye")
						}
					})
					if closes == 0 {
						t.Fatal("the agent leg was never closed")
					}
					pubs := ts.Stats().Publications
					pause, start := pubs["client:pause_publication"], pubs["client:start_publication"]
					switch {
					case pub == fakeaws.PublicationNever && pause+start != 0,
						pub == fakeaws.PublicationPauseOnly && (pause == 0 || start != 0),
						pub == fakeaws.PublicationAlways && (pause == 0 || start == 0):
						t.Fatalf("variant %s: client told pause %d, start %d times", pub, pause, start)
					}
					t.Logf("closes %d, client pause %d start %d, sender %+v", closes, pause, start, s.Stats().Sender)
				})
			}
		}
	}
}

// SMP #139: one lost client ack, then the next agent data frame lost. The
// real agent resends only its head (the message whose ack was lost) until it
// is acked; a client that does not re-ack duplicates stalls forever.
func TestAckLossThenDataLoss(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: agent.Quirks{Unpaced: true}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, nil)
	ts.AddFaults(t,
		&fakeaws.FaultRule{Direction: "client_to_agent", MessageType: "acknowledge", Nth: 40, Action: fakeaws.ActionDrop},
		&fakeaws.FaultRule{Direction: "agent_to_client", MessageType: "output_stream_data", Nth: 45, Action: fakeaws.ActionDrop},
	)
	echoTransfer(t, s, 1<<20, nil)
	if d := s.Stats().Receiver.Duplicates; d == 0 {
		t.Fatal("expected the agent to resend a duplicate that must be re-acked")
	}
}

// A corrupted frame from the agent (payload flipped, stale digest) is
// dropped without an ack and recovered by the agent's retransmission.
// Garbage binary and text messages on the websocket are ignored.
func TestCorruptionAndGarbage(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: agent.Quirks{Unpaced: true}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, nil)
	ts.AddFaults(t,
		&fakeaws.FaultRule{Direction: "agent_to_client", MessageType: "output_stream_data", Every: 101, Action: fakeaws.ActionCorruptPayload},
		&fakeaws.FaultRule{Direction: "agent_to_client", MessageType: "output_stream_data", Nth: 50, Action: fakeaws.ActionHeaderLength},
		&fakeaws.FaultRule{Direction: "agent_to_client", MessageType: "output_stream_data", Nth: 60, Action: fakeaws.ActionTruncate},
		&fakeaws.FaultRule{Direction: "agent_to_client", MessageType: "output_stream_data", Nth: 70, Action: fakeaws.ActionGarbleType},
		&fakeaws.FaultRule{Direction: "agent_to_client", MessageType: "output_stream_data", Nth: 80, Action: fakeaws.ActionCorruptDigest},
	)
	n := 0
	echoTransfer(t, s, 2<<20, func() {
		n++
		_ = ts.Inject(s.ID(), "client", []byte("this is not a frame"), false)
		_ = ts.Inject(s.ID(), "client", make([]byte, 200), false)
		_ = ts.Inject(s.ID(), "client", []byte(`{"not":"binary"}`), true)
	})
	st := s.Stats()
	if st.InvalidFrames == 0 {
		t.Fatal("no invalid frame was seen")
	}
	t.Logf("invalid frames dropped: %d, duplicates %d", st.InvalidFrames, st.Receiver.Duplicates)
}

func TestBadInput(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	ts.AddTarget(fakeaws.Target{ID: "i-0aaaaaaaaaaaaaaa0", Connected: false})
	port := fakeaws.Listen(t, fakeaws.Echo)
	kind := func(t *testing.T, err error) ssm.Kind {
		t.Helper()
		var ae *ssm.APIError
		if !errors.As(err, &ae) {
			t.Fatalf("not an APIError: %v", err)
		}
		return ae.Kind
	}
	t.Run("unknown target", func(t *testing.T) {
		_, err := startSession(t, ts, port, func(c *ssm.Config) { c.Target = "i-0bbbbbbbbbbbbbbb0" })
		if kind(t, err) != ssm.KindTargetNotConnected {
			t.Fatal(err)
		}
	})
	t.Run("agent offline", func(t *testing.T) {
		_, err := startSession(t, ts, port, func(c *ssm.Config) { c.Target = "i-0aaaaaaaaaaaaaaa0" })
		if kind(t, err) != ssm.KindTargetNotConnected {
			t.Fatal(err)
		}
		want := "instance is not connected to Session Manager: is the agent running and does the instance have the SSM role?"
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Fatalf("message %q", err)
		}
	})
	t.Run("unknown document", func(t *testing.T) {
		_, err := startSession(t, ts, port, func(c *ssm.Config) { c.DocumentName = "No-Such-Document" })
		if kind(t, err) != ssm.KindInvalidDocument {
			t.Fatal(err)
		}
	})
	t.Run("bad parameter", func(t *testing.T) {
		_, err := startSession(t, ts, port, func(c *ssm.Config) { c.Parameters = map[string][]string{"portNumber": {"99999"}} })
		if kind(t, err) != ssm.KindInvalidRequest {
			t.Fatal(err)
		}
	})
	t.Run("shell document refused", func(t *testing.T) {
		_, err := startSession(t, ts, port, func(c *ssm.Config) { c.DocumentName = fakeaws.DocumentShell; c.Parameters = nil })
		var hr *ssm.HandshakeRefusedError
		if !errors.As(err, &hr) {
			t.Fatalf("want HandshakeRefusedError, got %v", err)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		bad := ts.User
		// Change the first character (the secret is random: it may
		// already start with x).
		first := "x"
		if bad.SecretAccessKey[0] == 'x' {
			first = "y"
		}
		bad.SecretAccessKey = first + bad.SecretAccessKey[1:]
		cfg := ts.AWSConfig(&bad)
		_, err := startSession(t, ts, port, func(c *ssm.Config) { c.AWS = fakeAWS(ts, cfg) })
		if kind(t, err) != ssm.KindCredentials {
			t.Fatal(err)
		}
	})
	t.Run("dead target port", func(t *testing.T) {
		// The agent cannot connect: the session ends with channel_closed.
		s, err := startSession(t, ts, "1", nil)
		if err != nil {
			t.Fatalf("the session starts; the agent's dial fails after the handshake: %v", err)
		}
		defer s.Close()
		select {
		case <-s.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("session did not end")
		}
		closed, reason := s.ClosedByPeer()
		if !closed || !strings.Contains(reason, "Unable to connect to specified port") {
			t.Fatalf("closed %v reason %q", closed, reason)
		}
	})
}

func TestHandshakeNeverComes(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: agent.Quirks{NoHandshake: true}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	start := time.Now()
	_, err := startSession(t, ts, port, func(c *ssm.Config) { c.HandshakeTimeout = 2 * time.Second })
	var he *ssm.HandshakeError
	if !errors.As(err, &he) || he.Timeout == 0 {
		t.Fatalf("want a handshake timeout, got %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %s", el)
	}
	if ts.Stats().API["TerminateSession"]["200"] != 1 {
		t.Fatal("a failed start must terminate its session")
	}
}

// Throttled and failing ResumeSession calls, and refused upgrades, are
// retried with backoff until the session resumes.
func TestResumeRetriesThrottling(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: agent.Quirks{Unpaced: true}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, nil)
	ts.FailAPI("ResumeSession", "ThrottlingException", 400, 3)
	ts.FailAPI("ResumeSession", "InternalServerError", 500, 2)
	ts.FailUpgrades(502, 2)
	if err := ts.CloseLeg(s.ID(), "client", 1000, "Bye"); err != nil {
		t.Fatal(err)
	}
	// Written while disconnected: queued, never fatal.
	echoTransfer(t, s, 1<<20, nil)
	api := ts.Stats().API["ResumeSession"]
	if s.Stats().Reconnects != 1 || api["400"] != 3 || api["500"] != 2 || api["200"] != 3 {
		t.Fatalf("reconnects %d, ResumeSession %v", s.Stats().Reconnects, api)
	}
}

// The service ends a session while the client is away (idle timeout,
// administrator): ResumeSession returns no token and the session ends with
// SessionEndedError instead of retrying for minutes.
func TestResumeAfterSessionEnded(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, nil)
	// Every resume is throttled until the session is over, so no retry can
	// slip in between the first failure and the termination (a retry that
	// did once reconnected, and the session then ended cleanly).
	ts.FailAPI("ResumeSession", "ThrottlingException", 400, 1<<20)
	if err := ts.CloseLeg(s.ID(), "client", 0, ""); err != nil {
		t.Fatal(err)
	}
	if !fakeaws.WaitFor(10*time.Second, func() bool { return ts.Stats().API["ResumeSession"]["400"] >= 1 }) {
		t.Fatal("no resume attempt")
	}
	_ = ts.TerminateSession(s.ID(), "Session timed out due to inactivity.")
	ts.ClearFaults()
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("session did not end")
	}
	var se *ssm.SessionEndedError
	if err := s.Err(); !errors.As(err, &se) {
		t.Fatalf("want SessionEndedError, got %v", err)
	}
}

// A half-open client leg (TCP up, nothing flows, pings unanswered) is
// detected by the read deadline and replaced.
func TestHalfOpenDetected(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: agent.Quirks{Unpaced: true}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, func(c *ssm.Config) { c.PingInterval = 200 * time.Millisecond })
	if err := ts.HalfOpen(s.ID(), true); err != nil {
		t.Fatal(err)
	}
	if !fakeaws.WaitFor(10*time.Second, func() bool { return ts.Stats().API["ResumeSession"]["200"] > 0 }) {
		t.Fatal("half-open leg not detected")
	}
	ts.HalfOpen(s.ID(), false)
	echoTransfer(t, s, 256<<10, nil)
}

// The service ends the session (administrator's TerminateSession): Read
// returns EOF after every byte, and Err is nil.
func TestChannelClosedByService(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, nil)
	echoTransfer(t, s, 64<<10, nil)
	if err := ts.TerminateSession(s.ID(), "Session terminated by the administrator."); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(s); err != nil {
		t.Fatal(err)
	}
	closed, reason := s.ClosedByPeer()
	if !closed || reason != "Session terminated by the administrator." || s.Err() != nil {
		t.Fatalf("closed %v reason %q err %v", closed, reason, s.Err())
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("write after close succeeded")
	}
}

// StartSession is retried by the SDK on throttling and 5xx.
func TestStartSessionThrottled(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	port := fakeaws.Listen(t, fakeaws.Echo)
	ts.FailAPI("StartSession", "ThrottlingException", 400, 1)
	ts.FailAPI("StartSession", "InternalServerError", 500, 1)
	s := mustStart(t, ts, port, nil)
	echoTransfer(t, s, 10_000, nil)
	if api := ts.Stats().API["StartSession"]; api["400"] != 1 || api["500"] != 1 || api["200"] != 1 {
		t.Fatalf("StartSession %v", api)
	}
}

// With SignDial every upgrade is signed (service ssmmessages) with the
// credentials of that moment. The fake verifies each signature and closes a
// signed leg when the credentials that signed it expire (SMP #136); the
// resume, signed with fresh credentials, carries on.
func TestSignedDialAndCredentialExpiry(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{RequireSignedUpgrade: true, CredTTL: 3 * time.Second})
	port := fakeaws.Listen(t, fakeaws.Echo)
	userCfg := ts.AWSConfig(nil)
	stsClient := sts.NewFromConfig(userCfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(ts.URL()) })
	mints := 0
	provider := aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
		out, err := stsClient.GetSessionToken(ctx, &sts.GetSessionTokenInput{})
		if err != nil {
			return aws.Credentials{}, err
		}
		mints++
		c := out.Credentials
		return aws.Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken,
			CanExpire: true, Expires: *c.Expiration}, nil
	}), func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = time.Second })
	cfg := aws.Config{Region: userCfg.Region, Credentials: provider}
	s := mustStart(t, ts, port, func(c *ssm.Config) {
		c.SignDial, c.AWS = true, fakeAWS(ts, cfg)
	})
	if !fakeaws.WaitFor(15*time.Second, func() bool { return ts.Stats().SignedLegsExpired >= 2 && s.Stats().Reconnects >= 2 }) {
		t.Fatalf("signed legs expired %d, reconnects %d", ts.Stats().SignedLegsExpired, s.Stats().Reconnects)
	}
	echoTransfer(t, s, 64<<10, nil)
	if mints < 3 {
		t.Fatalf("credentials minted %d times; each dial must use fresh ones", mints)
	}
	for code := range ts.Stats().API["ResumeSession"] {
		if code != "200" {
			t.Fatalf("ResumeSession %v", ts.Stats().API["ResumeSession"])
		}
	}
}

// Close must not hang when the agent stops acking with the window full
// (a NAT dropped the path): it gives up on the flag and still terminates.
func TestCloseBoundedWhenPathDead(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, func(c *ssm.Config) { c.DrainTimeout = time.Second })
	ts.HalfOpen(s.ID(), true)
	go s.Write(make([]byte, 8<<20)) // fills the window; never acked
	time.Sleep(500 * time.Millisecond)
	done := make(chan struct{})
	start := time.Now()
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hung")
	}
	t.Logf("Close took %s", time.Since(start).Round(time.Millisecond))
	if ts.Stats().API["TerminateSession"]["200"] != 1 {
		t.Fatal("TerminateSession not called")
	}
	ts.AllowViolations["terminate-with-unacked-data"] = true
}

// A service that accepts upgrades and drops the legs at once must not turn
// into a tight ResumeSession loop: the budget and backoff carry over legs
// that never proved healthy, and the session ends with ResumeError.
func TestLegsDroppedAtOnceExhaustBudget(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, func(c *ssm.Config) { c.ResumeBudget = 4 * time.Second })
	ts.DropLegs(1 << 30)
	_ = ts.CloseLeg(s.ID(), "client", 1000, "Bye")
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("session never gave up")
	}
	var re *ssm.ResumeError
	if !errors.As(s.Err(), &re) {
		t.Fatalf("want ResumeError, got %v", s.Err())
	}
	n := ts.Stats().API["ResumeSession"]["200"]
	if n > 15 {
		t.Fatalf("%d ResumeSession calls in a 4 s budget: no backoff across dropped legs", n)
	}
	t.Logf("%d ResumeSession calls, %s", n, re)
}

// A slow local reader (tiny delivery buffer, pauses) must not stall the
// websocket reader: held messages are drained when the reader makes room,
// and the byte stream stays exact.
func TestSlowLocalReader(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{AgentQuirks: agent.Quirks{Unpaced: true}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, func(c *ssm.Config) { c.DeliveryBuffer = wire.MaxFrameSize })
	data := make([]byte, 512<<10)
	rand.Read(data)
	go s.Write(data)
	got := make([]byte, 0, len(data))
	buf := make([]byte, 1000)
	deadline := time.Now().Add(90 * time.Second)
	for len(got) < len(data) && time.Now().Before(deadline) {
		if len(got) == 100_000 || len(got) == 300_000 {
			time.Sleep(2 * time.Second) // ssh suspended for a moment
		}
		n, err := s.Read(buf[:min(len(buf), 100_000-len(got)%100_000)])
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, stream differs or incomplete", len(got))
	}
	t.Logf("held/not ready %d, duplicates %d", s.Stats().Receiver.NotReady, s.Stats().Receiver.Duplicates)
}
