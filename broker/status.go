package broker

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// Status is what "ssmproxy creds" shows: where credentials come from, every
// tier's expiry, the next re-mint and the hard deadline. It holds no secret.
type Status struct {
	Profile  string
	InConfig bool
	Region   string
	RoleARN  string
	Source   string
	// KeyringBackend stores long-term keys; MFAKeyringBackend MFA sessions.
	KeyringBackend    string
	MFAKeyringBackend string
	MFASerial         string
	MFASessionExpires time.Time // zero: no valid MFA session stored
	// Deadline is the source's hard deadline (nil: renews itself).
	Deadline *Deadline
	// Entries are the cached scoped credentials of the profile.
	Entries []EntryStatus
	// CacheDir is where they live.
	CacheDir string
}

// EntryStatus describes one cached set of scoped credentials.
type EntryStatus struct {
	RoleARN, Target, Document, RoleSessionName string
	Lookup                                     bool   // the read-only scope of target lookups
	AccessKeyID                                string // masked
	Expires                                    time.Time
	// ReMintFrom and ReMintBy bound when a running ssmproxy re-mints them
	// (expiry minus the jittered window); a new process mints from ReMintFrom on.
	ReMintFrom, ReMintBy time.Time
	Fresh                bool
	Deadline             *Deadline
}

// Status reports the broker's view without minting anything. Reading the
// stored key and the MFA session may ask for the file keyring's passphrase,
// on the terminal too: it is for interactive commands, not a ProxyCommand.
func (b *Broker) Status(ctx context.Context) Status { return b.chain.status(ctx, b.clk) }

// status reads every link's state.
func (c *chain) status(ctx context.Context, clk clock.Clock) Status {
	ks, isKeyring := c.src.src.(*keyringSource)
	if isKeyring {
		_, _ = ks.retrieve(ctx) // learn the stored MFA serial; the key stays in memory only
	}
	set := c.set
	st := Status{Profile: set.profile, InConfig: set.inConfig, Region: set.region, RoleARN: set.roleARN,
		Source: c.src.src.describe(), Deadline: c.src.src.deadline(), CacheDir: c.cache.file.dir}
	// The store the source key was found in; else where "ssmproxy login"
	// would put one.
	if isKeyring {
		st.KeyringBackend = ks.store.Backend()
	} else if store, err := c.stores.get(ctx, true); err == nil {
		st.KeyringBackend = store.Backend()
	}
	if store, err := c.stores.get(ctx, false); err == nil {
		st.MFAKeyringBackend = store.Backend()
	}
	st.MFASerial = c.mfa.deviceSerial()
	if st.MFASerial != "" {
		st.MFASessionExpires = c.mfa.expiry(ctx, st.MFASerial)
		if !st.MFASessionExpires.IsZero() && !c.mfa.codes.renewable() {
			st.Deadline = &Deadline{At: st.MFASessionExpires, What: "the MFA session",
				Fix: "reconnect from a terminal to enter a new code, or set " + EnvMFAProcess}
		}
	}
	now := clk.Now()
	for _, e := range c.cache.file.list() {
		if e.Profile != set.profile {
			continue
		}
		cr := e.Credentials
		w := window(lifetimeOf(cr))
		es := EntryStatus{RoleARN: e.RoleARN, Target: e.Target, Document: e.Document, RoleSessionName: e.RoleSessionName, Lookup: e.Lookup,
			AccessKeyID: MaskKeyID(cr.AccessKeyID), Expires: cr.Expires, Fresh: fresh(cr, now), Deadline: e.Deadline}
		if cr.CanExpire() {
			es.ReMintFrom, es.ReMintBy = cr.Expires.Add(-w), cr.Expires.Add(-time.Duration(minJitterShare*float64(w)))
		}
		st.Entries = append(st.Entries, es)
	}
	slices.SortFunc(st.Entries, func(a, b EntryStatus) int { return a.Expires.Compare(b.Expires) })
	return st
}

// CredentialProcessOutput is the credential_process JSON (Version 1) for
// credentials from Retrieve, with Expiration reported a few minutes early:
// the consumer's SDK cache uses them up to that instant with no window.
type CredentialProcessOutput struct {
	Version         int    `json:"Version"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	SessionToken    string `json:"SessionToken,omitempty"`
	Expiration      string `json:"Expiration,omitempty"`
}

// String never shows the secrets.
func (o CredentialProcessOutput) String() string {
	return "CredentialProcessOutput{AccessKeyId:" + MaskKeyID(o.AccessKeyID) + " Expiration:" + o.Expiration + " secrets:[redacted]}"
}

// GoString is String.
func (o CredentialProcessOutput) GoString() string { return o.String() }

// LogValue redacts for log/slog.
func (o CredentialProcessOutput) LogValue() slog.Value { return slog.StringValue(o.String()) }

// CredentialProcess retrieves credentials and shapes them for credential_process.
func (b *Broker) CredentialProcess(ctx context.Context) (CredentialProcessOutput, error) {
	a, err := b.Retrieve(ctx)
	if err != nil {
		return CredentialProcessOutput{}, err
	}
	if !a.CanExpire && a.SessionToken == "" {
		return CredentialProcessOutput{}, errLongTermOut
	}
	out := CredentialProcessOutput{Version: 1, AccessKeyID: a.AccessKeyID, SecretAccessKey: a.SecretAccessKey, SessionToken: a.SessionToken}
	if a.CanExpire {
		c := Credentials{Expires: a.Expires}
		b.mu.Lock()
		if b.cur != nil && b.cur.Credentials.AccessKeyID == a.AccessKeyID {
			c = b.cur.Credentials // with its issue time, for the lifetime
		}
		b.mu.Unlock()
		out.Expiration = reportedExpiry(c).UTC().Format(time.RFC3339)
	}
	return out, nil
}
