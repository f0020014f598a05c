package prompt

import (
	"sync"
	"time"
)

// The terminal modes a prompt changed, until it restores them. A prompt that
// a signal cancels restores them itself, but it may run in a goroutine the
// command no longer waits for (the SDK's credentials cache answers a
// cancelled caller at once and leaves its resolver running), so the process
// could exit first and leave the user's shell without echo. Settle, called
// on the way out, closes that gap (docs/credentials.md 5.7).
var changed struct {
	sync.Mutex
	restores map[*restorer]struct{}
}

// restorer restores one terminal's modes, once.
type restorer struct {
	once    sync.Once
	restore func()
}

// track registers restore and returns the function that runs it (once) and
// unregisters it.
func track(restore func()) func() {
	r := &restorer{restore: restore}
	changed.Lock()
	if changed.restores == nil {
		changed.restores = map[*restorer]struct{}{}
	}
	changed.restores[r] = struct{}{}
	changed.Unlock()
	return r.run
}

func (r *restorer) run() {
	r.once.Do(func() {
		r.restore()
		changed.Lock()
		delete(changed.restores, r)
		changed.Unlock()
	})
}

func pending() []*restorer {
	changed.Lock()
	defer changed.Unlock()
	out := make([]*restorer, 0, len(changed.restores))
	for r := range changed.restores {
		out = append(out, r)
	}
	return out
}

// Settle gives terminal prompts that are being cancelled up to d to restore
// the terminal themselves, then restores whatever is still changed. Call it
// before the process exits; it returns at once when no prompt is active.
func Settle(d time.Duration) {
	for end := time.Now().Add(d); len(pending()) > 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	for _, r := range pending() {
		r.run()
	}
}
