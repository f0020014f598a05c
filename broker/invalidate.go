package broker

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// After a refusal (an ExpiredTokenException, an UnrecognizedClientException
// or a 403) the caller invalidates and retries once (docs/credentials.md 5.5).
// Which credentials signed the refused call is not said, so the Broker
// remembers what it handed out: a refusal of credentials the timer has
// already replaced must not throw the new ones away.

// rejection names credentials the service refused.
type rejection struct {
	key string // access key id; "" for none
	// sure is false when other credentials, handed out just before these,
	// may have been the refused ones.
	sure bool
}

// handedOut records credentials Retrieve returned, and when it last did.
type handedOut struct {
	key string
	at  time.Time
}

// handout is the credentials Retrieve handed out last, and the different
// ones before them.
type handout struct{ last, prev handedOut }

// record notes that the credentials with access key id key go out now.
func (h *handout) record(key string, now time.Time) {
	if h.last.key != key {
		h.prev = h.last
	}
	h.last = handedOut{key: key, at: now}
}

// refusalWindow is how long after credentials were last handed out a call
// signed with them may still come back refused (ssm's calls time out after
// 30 s).
const refusalWindow = time.Minute

// serve records that e's credentials are handed out now, for Invalidate.
func (b *Broker) serve(e *entry) aws.Credentials {
	now := b.clk.Now()
	b.mu.Lock()
	b.handed.record(e.Credentials.AccessKeyID, now)
	b.mu.Unlock()
	return e.Credentials.AWS(e.Source)
}

// Invalidate is called when the service refused credentials this broker
// handed out. The next Retrieve mints for real (it does not take the same
// credentials from the cache file or the source's cache again). Only the
// credentials that may have signed the refused call are affected: when the
// timer has adopted new ones that nobody has used yet, the refusal was of
// the old ones and the new ones stay.
func (b *Broker) Invalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil {
		return
	}
	cur, h := b.cur.Credentials.AccessKeyID, b.handed
	switch {
	case h.last.key != "" && h.last.key != cur:
		b.log.Info("refused credentials were already replaced; keeping the new ones",
			"refused", MaskKeyID(h.last.key), "current", MaskKeyID(cur))
		return
	case h.last.key == cur && h.prev.key != "" && b.clk.Now().Sub(h.prev.at) < refusalWindow:
		// The previous credentials were handed out moments ago too: the
		// refused call may have been signed with either.
		b.rej = rejection{key: cur}
	default:
		b.rej = rejection{key: cur, sure: true}
	}
	b.log.Info("credentials were refused by the service; the next call mints new ones", "accessKeyId", MaskKeyID(cur))
}
