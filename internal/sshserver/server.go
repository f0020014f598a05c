// Package sshserver is a small pure-Go SSH server (golang.org/x/crypto/ssh)
// for tests and the demo on machines without OpenSSH's sshd. It accepts one
// authorized public key and runs exec requests with /bin/sh -c, so scp and
// rsync work against it when their binaries are installed. It also offers
// built-in exec commands that need nothing installed:
//
//	ssmproxy-sink      reads stdin to EOF, prints its length and SHA-256
//	ssmproxy-source N  writes N deterministic pseudo-random bytes
//	ssmproxy-echo      copies stdin to stdout
package sshserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// Server is a running SSH server.
type Server struct {
	ln   net.Listener
	cfg  *ssh.ServerConfig
	log  *slog.Logger
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]bool
}

// Start listens on addr (e.g. 127.0.0.1:0) and accepts clients presenting
// authorized. The host key is generated per server.
func Start(addr string, authorized ssh.PublicKey, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	want := authorized.Marshal()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if string(key.Marshal()) == string(want) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
		ServerVersion: "SSH-2.0-ssmproxy-test",
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, cfg: cfg, log: log, conn: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the listening port.
func (s *Server) Port() string {
	_, p, _ := net.SplitHostPort(s.Addr())
	return p
}

// Close stops the server and its connections.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conn[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { s.mu.Lock(); delete(s.conn, c); s.mu.Unlock(); c.Close() }()
			s.serve(c)
		}()
	}
}

func (s *Server) serve(c net.Conn) {
	sc, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		s.log.Debug("ssh handshake failed", "err", err)
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.session(ch, creqs) }()
	}
}

func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			status := s.run(ch, p.Command)
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
			return
		case "env", "pty-req":
			_ = req.Reply(true, nil)
		default:
			_ = req.Reply(false, nil)
		}
	}
}

// run executes one exec request and returns its exit status.
func (s *Server) run(ch ssh.Channel, command string) uint32 {
	fields := strings.Fields(command)
	switch {
	case len(fields) == 1 && fields[0] == "ssmproxy-sink":
		h := sha256.New()
		n, err := io.Copy(h, ch)
		if err != nil {
			return 1
		}
		fmt.Fprintf(ch, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
		return 0
	case len(fields) == 2 && fields[0] == "ssmproxy-source":
		n, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil || n < 0 {
			fmt.Fprintf(ch.Stderr(), "bad size %q\n", fields[1])
			return 2
		}
		if _, err := io.Copy(ch, io.LimitReader(NewSource(1), n)); err != nil {
			return 1
		}
		_ = ch.CloseWrite()
		return 0
	case len(fields) == 1 && fields[0] == "ssmproxy-echo":
		_, _ = io.Copy(ch, ch)
		_ = ch.CloseWrite()
		return 0
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Stdin = ch
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	err := cmd.Run()
	_ = ch.CloseWrite()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return uint32(ee.ExitCode())
	default:
		fmt.Fprintf(ch.Stderr(), "%v\n", err)
		return 127
	}
}

// Source is a deterministic pseudo-random byte stream (xorshift64*), so a
// receiver can verify a transfer by recomputing it.
type Source struct{ x uint64 }

// NewSource returns a Source seeded with seed (non-zero).
func NewSource(seed uint64) *Source {
	if seed == 0 {
		seed = 1
	}
	return &Source{x: seed}
}

func (s *Source) Read(p []byte) (int, error) {
	var b [8]byte
	for i := 0; i < len(p); i += 8 {
		s.x ^= s.x >> 12
		s.x ^= s.x << 25
		s.x ^= s.x >> 27
		binary.LittleEndian.PutUint64(b[:], s.x*2685821657736338717)
		copy(p[i:], b[:])
	}
	return len(p), nil
}
