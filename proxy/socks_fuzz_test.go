package proxy

import (
	"bufio"
	"bytes"
	"net/netip"
	"testing"
)

// FuzzSOCKSRequest: whatever a local client sends, the parser never
// panics, never reads past what it was given, and accepts only a CONNECT
// to port 1..65535 of an IP address or a plain DNS name (what reaches the
// document parameters and the logs).
func FuzzSOCKSRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add(append([]byte{5, 1, 0, 5, 1, 0, 3, 9}, append([]byte("localhost"), 0x1f, 0x90)...))
	f.Add([]byte{5, 1, 0, 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22})
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
	f.Add([]byte{5, 2, 2, 0, 5, 2, 0, 1, 10, 0, 0, 1, 1, 187})
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		dest, err := socksRequest(bufio.NewReader(bytes.NewReader(in)), &out)
		if out.Len() > 2+10 {
			t.Fatalf("wrote %d bytes of replies", out.Len())
		}
		if err != nil {
			return
		}
		if dest.Port < 1 || dest.Port > 65535 {
			t.Fatalf("accepted port %d", dest.Port)
		}
		if _, perr := netip.ParseAddr(dest.Host); perr != nil && !ValidHostName(dest.Host) {
			t.Fatalf("accepted host %q", dest.Host)
		}
	})
}
