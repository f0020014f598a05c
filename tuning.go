package main

import (
	"encoding/json"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"

	"github.com/google/uuid"
)

// tuneRuntime sets the runtime up for the data path (docs/bench.md).
//
// One P: a session is a pipeline (socket, decode, ack, deliver) with little
// to run in parallel, and with more Ps every message that readies a
// goroutine wakes another thread that spins and finds nothing: at the
// agent's 1 KiB-per-millisecond pace runtime.futex was a quarter of the
// paced download's profile, and unpaced the wakeups cost more than the
// parallelism gained (make bench, docs/bench.md). $GOMAXPROCS still wins.
//
// Message ids come from a pool filled from crypto/rand in bulk instead of
// one read per frame (they need to be unique, and stay unpredictable).
//
// GC: a little memory for CPU, since every 1 KiB message allocates; a soft
// limit keeps the heap (send window, delivery ring, out-of-order buffer:
// about 10 MiB at most) well inside the RSS budget.
func tuneRuntime() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	uuid.EnableRandPool()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(28 << 20)
	}
}

// startCPUProfile writes a CPU profile to $SSMPROXY_CPUPROFILE when set; the
// benchmark uses it to see where ssmproxy's own time goes.
func startCPUProfile() func() {
	path := os.Getenv("SSMPROXY_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// RuntimeStats is what $SSMPROXY_RUNTIME_STATS receives at exit: the
// benchmark divides the allocations by the bytes moved (docs/bench.md).
type RuntimeStats struct {
	Mallocs    uint64 `json:"mallocs"`     // heap objects allocated, tiny ones included
	AllocBytes uint64 `json:"alloc_bytes"` // bytes allocated
	GCCycles   uint32 `json:"gc_cycles"`
}

// runtimeStatsAtExit writes RuntimeStats to $SSMPROXY_RUNTIME_STATS, when
// set, as the process ends. It is a benchmark's knob: nothing in it is
// secret, and it is read once, at exit.
func runtimeStatsAtExit() func() {
	path := os.Getenv("SSMPROXY_RUNTIME_STATS")
	if path == "" {
		return func() {}
	}
	return func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		b, err := json.Marshal(RuntimeStats{Mallocs: m.Mallocs, AllocBytes: m.TotalAlloc, GCCycles: m.NumGC})
		if err != nil {
			return
		}
		_ = os.WriteFile(path, b, 0o600)
	}
}
