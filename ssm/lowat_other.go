//go:build !linux

package ssm

import "net"

// lowWater is Linux's (lowat_linux.go); elsewhere a coalesced socket
// still wakes the poller once per arriving segment.
type lowWater struct{}

func newLowWater(net.Conn, int) *lowWater { return nil }

func (w *lowWater) raise() {}

func (w *lowWater) read(p []byte) (int, error) { panic("unreachable: newLowWater returns nil") }
