package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/internal/secretenv"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// Tier 2 of credentials.md 5.1: with mfa_serial, the long-term key and a
// one-time code mint a GetSessionToken session (12 h by default) once; role
// credentials are then re-minted from it every hour without a prompt. The
// session carries the user's full power, so it lives in the keyring, never
// in the cache file.

var mfaCodePattern = regexp.MustCompile(`^\d{6}$`)

// mfaItemKey is the keyring item of the profile's MFA session.
func mfaItemKey(profile, serial string) string {
	return "mfa-session:" + profile + ":" + hashString(serial)[:12]
}

// mfaSession returns a valid MFA session for the source key, minting one
// (with a one-time code) when the stored one is missing or about to end.
func (b *Broker) mfaSession(ctx context.Context, src Credentials, serial string, interactive bool) (Credentials, error) {
	store, err := b.openKeyring(ctx, false)
	if err != nil {
		return Credentials{}, err
	}
	key := mfaItemKey(b.set.profile, serial)
	if c, ok := b.readMFASession(ctx, store, key); ok {
		return c, nil
	}
	// One prompt at a time: take the MFA lock before asking, then look again,
	// since another process may have asked meanwhile.
	release, err := b.acquire(ctx, "mfa-"+hashString(b.set.profile)[:16], mfaLockTimeout, "get an MFA code")
	if err != nil {
		return Credentials{}, err
	}
	defer release()
	if c, ok := b.readMFASession(ctx, store, key); ok {
		return c, nil
	}
	code, err := b.mfaCode(ctx, serial, interactive)
	if err != nil {
		return Credentials{}, err
	}
	out, err := b.stsFor(src).GetSessionToken(ctx, &sts.GetSessionTokenInput{
		DurationSeconds: aws.Int32(int32(b.set.mfaDuration / time.Second)),
		SerialNumber:    aws.String(serial),
		TokenCode:       aws.String(code),
	})
	if err != nil {
		return Credentials{}, b.stsFailure("GetSessionToken with MFA", src, err)
	}
	c := fromSTS(out.Credentials, b.clk.Now())
	data, err := json.Marshal(c)
	if err != nil {
		return Credentials{}, err
	}
	if err := store.Set(ctx, keyring.Item{Key: key, Data: data, Label: "ssmproxy MFA session " + b.set.profile}); err != nil {
		// Still usable for this process; others will ask again.
		b.log.Warn("could not store the MFA session in the keyring", "err", err)
	}
	b.log.Info("minted an MFA session", "profile", b.set.profile, "expires", c.Expires)
	return c, nil
}

// readMFASession returns the stored session when enough of it remains for
// an AssumeRole call.
func (b *Broker) readMFASession(ctx context.Context, store keyring.Store, key string) (Credentials, bool) {
	it, err := store.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, keyring.ErrNotFound) {
			b.log.Warn("could not read the MFA session from the keyring", "err", err)
		}
		return Credentials{}, false
	}
	var c Credentials
	if json.Unmarshal(it.Data, &c) != nil || !c.valid() {
		return Credentials{}, false
	}
	margin := min(time.Minute, lifetimeOf(c)/10)
	if !c.CanExpire() || c.Expires.Sub(b.clk.Now()) <= margin {
		return Credentials{}, false
	}
	return c, true
}

// forgetMFASession removes the stored MFA session.
func (b *Broker) forgetMFASession(ctx context.Context, serial string) {
	if store, err := b.openKeyring(ctx, false); err == nil {
		if err := store.Remove(ctx, mfaItemKey(b.set.profile, serial)); err != nil {
			b.log.Warn("could not remove the MFA session from the keyring", "err", err)
		}
	}
}

// mfaExpiry returns the stored MFA session's expiry (zero if none).
func (b *Broker) mfaExpiry(ctx context.Context, serial string) time.Time {
	store, err := b.openKeyring(ctx, false)
	if err != nil {
		return time.Time{}
	}
	if c, ok := b.readMFASession(ctx, store, mfaItemKey(b.set.profile, serial)); ok {
		return c.Expires
	}
	return time.Time{}
}

// mfaCode obtains a one-time code (credentials.md 5.7): $SSMPROXY_MFA_TOKEN
// (first mint only: a code goes stale), the mfa process, the terminal (only
// while interactive, i.e. before the first SSH byte), SSH_ASKPASS; else one
// error line naming the device and the fix.
func (b *Broker) mfaCode(ctx context.Context, serial string, interactive bool) (string, error) {
	if interactive {
		if code := strings.TrimSpace(secretenv.Get(EnvMFAToken)); code != "" {
			return checkCode(code, EnvMFAToken)
		}
	}
	if b.set.mfaProcess != "" {
		code, err := prompt.Process(ctx, b.set.mfaProcess)
		if err != nil {
			return "", fmt.Errorf("MFA process (%s): %w", EnvMFAProcess, err)
		}
		return checkCode(code, "the MFA process")
	}
	p := b.o.Prompter
	p.NoTTY = p.NoTTY || !interactive
	code, err := p.Secret(ctx, "MFA code for "+serial, EnvMFAToken+" or "+EnvMFAProcess)
	if err != nil {
		return "", &SourceError{Profile: b.set.profile, What: "the MFA session",
			Reason: "needs a new code from " + serial + ", and there is no way to ask for one here (" + noPromptWhy(err) + ")",
			Fix:    fmt.Sprintf("run ssmproxy from a terminal, or set %s (a command printing a code) or %s", EnvMFAProcess, EnvMFAToken)}
	}
	return checkCode(strings.TrimSpace(code), "the prompt")
}

func checkCode(code, from string) (string, error) {
	if !mfaCodePattern.MatchString(code) {
		return "", fmt.Errorf("the MFA code from %s is not six digits", from)
	}
	return code, nil
}

// mfaDriverAvailable reports whether a code can be obtained mid-session
// without the terminal, which makes an MFA session renewable.
func (b *Broker) mfaDriverAvailable() bool {
	return b.set.mfaProcess != "" || b.o.Prompter.CanAskWithoutTerminal()
}

// noPromptWhy extracts the prompter's reasons for the error message.
func noPromptWhy(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, ": cannot ask "); ok {
		if _, why, ok := strings.Cut(after, ": "); ok {
			msg = why
		}
	}
	if i := strings.Index(msg, "; set "); i >= 0 {
		msg = msg[:i]
	}
	return msg
}
