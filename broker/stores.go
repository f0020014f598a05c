package broker

import (
	"context"
	"sync"

	"github.com/ssmproxy/ssmproxy/keyring"
)

// keyrings opens, once each, the two stores of docs/credentials.md 5.2: the
// persistent one for long-term keys, and the automatically chosen one, which
// may be volatile (keyctl), for MFA sessions.
type keyrings struct {
	open func(ctx context.Context, persistent bool) (keyring.Store, error)

	mu                   sync.Mutex
	persistent, volatile keyring.Store
}

// get returns the persistent or the automatically chosen store.
func (k *keyrings) get(ctx context.Context, persistent bool) (keyring.Store, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	slot := &k.volatile
	if persistent {
		slot = &k.persistent
	}
	if *slot != nil {
		return *slot, nil
	}
	st, err := k.open(ctx, persistent)
	if err != nil {
		return nil, err
	}
	*slot = st
	return st, nil
}
