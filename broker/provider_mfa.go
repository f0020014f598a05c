package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/keyring"
)

// mfaProvider is the second link (docs/credentials.md 5.1, tier 2): with an MFA
// device and a long-term key, the key and a one-time code mint a
// GetSessionToken session (12 h by default) once; role credentials are then
// re-minted from it every hour without a prompt (option A of 2.4). The
// session carries the user's full power, so it lives in the keyring, never
// in the cache file. Without a device, or from a temporary source, the link
// passes the source's credentials on.
type mfaProvider struct {
	src      *sourceProvider
	codes    *mfaCodes
	stores   *keyrings
	locks    *locker
	sts      stsClients
	serial   string // the profile's mfa_serial; a "ssmproxy login" key may add one
	duration time.Duration
	clk      clock.Clock
	log      *slog.Logger
}

// based is what a mint starts from: the source credentials, and what the
// mint signs with (the source itself, or the MFA session minted from it).
type based struct {
	src, base Credentials
	deadline  *Deadline
	mfa       string // the MFA device whose session base is; "" when base is src
}

// Retrieve makes the link an aws.CredentialsProvider: the MFA session, or
// the source's credentials.
func (p *mfaProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	bs, err := p.based(ctx)
	return bs.base.AWS(p.src.src.describe()), err
}

// deviceSerial is the profile's mfa_serial, or the one stored with the key.
func (p *mfaProvider) deviceSerial() string {
	if p.serial != "" {
		return p.serial
	}
	return p.src.storedMFASerial()
}

// based retrieves the source credentials and, with an MFA device and a
// long-term key, the MFA session. This is the part of a mint that may ask a
// human (the file keyring's passphrase, an MFA code); it takes no role lock.
func (p *mfaProvider) based(ctx context.Context) (based, error) {
	ctx, cancel := context.WithTimeout(ctx, stsCallTimeout+mfaLockTimeout)
	defer cancel()
	src, err := p.src.retrieve(ctx)
	if err != nil {
		return based{}, err
	}
	bs := based{src: src, base: src, deadline: p.src.src.deadline()}
	if serial := p.deviceSerial(); serial != "" && !src.Temporary() {
		if bs.base, err = p.session(ctx, src, serial); err != nil {
			return based{}, err
		}
		bs.base.register()
		bs.mfa = serial
		bs.deadline = &Deadline{At: bs.base.Expires, What: "the MFA session",
			Fix:       fmt.Sprintf("reconnect from a terminal to enter a new code, or set %s", EnvMFAProcess),
			Renewable: p.codes.renewable()}
	}
	return bs, nil
}

// mfaItemKey is the keyring item of the profile's MFA session.
func mfaItemKey(profile, serial string) string {
	return "mfa-session:" + profile + ":" + hashString(serial)[:12]
}

// session returns a valid MFA session for the source key, minting one (with
// a one-time code) when the stored one is missing or about to end.
func (p *mfaProvider) session(ctx context.Context, src Credentials, serial string) (Credentials, error) {
	store, err := p.stores.get(ctx, false)
	if err != nil {
		return Credentials{}, err
	}
	profile := p.src.profile
	key := mfaItemKey(profile, serial)
	if c, ok := p.read(ctx, store, key); ok {
		return c, nil
	}
	// One prompt at a time: take the MFA lock before asking, then look again,
	// since another process may have asked meanwhile.
	release, err := p.locks.acquire(ctx, "mfa-"+hashString(profile)[:16], mfaLockTimeout, "get an MFA code")
	if err != nil {
		return Credentials{}, err
	}
	defer release()
	if c, ok := p.read(ctx, store, key); ok {
		return c, nil
	}
	code, err := p.codes.code(ctx, serial)
	if err != nil {
		return Credentials{}, err
	}
	out, err := p.sts.signedBy(src).GetSessionToken(ctx, &sts.GetSessionTokenInput{
		DurationSeconds: aws.Int32(int32(p.duration / time.Second)),
		SerialNumber:    aws.String(serial),
		TokenCode:       aws.String(code),
	})
	if err != nil {
		return Credentials{}, p.src.failure("GetSessionToken with MFA", src, err)
	}
	c := fromSTS(out.Credentials, p.clk.Now())
	data, err := json.Marshal(c)
	if err != nil {
		return Credentials{}, err
	}
	if err := store.Set(ctx, keyring.Item{Key: key, Data: data, Label: "ssmproxy MFA session " + profile}); err != nil {
		// Still usable for this process; others will ask again.
		p.log.Warn("could not store the MFA session in the keyring", "err", err)
	}
	p.log.Info("minted an MFA session", "profile", profile, "expires", c.Expires)
	return c, nil
}

// read returns the stored session when enough of it remains for an
// AssumeRole call.
func (p *mfaProvider) read(ctx context.Context, store keyring.Store, key string) (Credentials, bool) {
	it, err := store.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, keyring.ErrNotFound) {
			p.log.Warn("could not read the MFA session from the keyring", "err", err)
		}
		return Credentials{}, false
	}
	var c Credentials
	if json.Unmarshal(it.Data, &c) != nil || !c.valid() {
		return Credentials{}, false
	}
	margin := min(time.Minute, lifetimeOf(c)/10)
	if !c.CanExpire() || c.Expires.Sub(p.clk.Now()) <= margin {
		return Credentials{}, false
	}
	return c, true
}

// forget removes the stored MFA session: it was refused, so the next
// attempt mints a new one.
func (p *mfaProvider) forget(ctx context.Context, serial string) {
	if store, err := p.stores.get(ctx, false); err == nil {
		if err := store.Remove(ctx, mfaItemKey(p.src.profile, serial)); err != nil {
			p.log.Warn("could not remove the MFA session from the keyring", "err", err)
		}
	}
}

// expiry returns the stored MFA session's expiry (zero if none).
func (p *mfaProvider) expiry(ctx context.Context, serial string) time.Time {
	store, err := p.stores.get(ctx, false)
	if err != nil {
		return time.Time{}
	}
	if c, ok := p.read(ctx, store, mfaItemKey(p.src.profile, serial)); ok {
		return c.Expires
	}
	return time.Time{}
}
