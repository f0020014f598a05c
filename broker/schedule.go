package broker

import (
	"time"
)

// When to re-mint (docs/credentials.md 5.5), scaled to the credential lifetime so
// that the same rule serves 1-hour credentials in production and 20-second
// credentials in tests:
//
//	window W   = min(15 min, lifetime/4)
//	re-mint at   expiry − j·W, j uniform in [2/3, 1]   (this process's timer)
//	fresh        while more than W remains              (file cache, all processes)
//
// So 1 h credentials are re-minted 10–15 min before expiry, and 20 s
// credentials 3.3–5 s before. Because a timer always fires with at most W
// left, the process whose timer fires first finds the shared entry stale and
// mints; every other process, firing later, finds the new entry fresh and
// adopts it. The jitter spreads processes that started together.
const (
	maxWindow      = 15 * time.Minute
	minJitterShare = 2.0 / 3.0
	// defaultLifetime is assumed for credentials whose issue time is unknown
	// (the window then caps at 15 min).
	defaultLifetime = time.Hour
)

// window is W for credentials of the given lifetime.
func window(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		lifetime = defaultLifetime
	}
	return min(maxWindow, lifetime/4)
}

// lifetimeOf is the lifetime used for scheduling.
func lifetimeOf(c Credentials) time.Duration {
	if l := c.Lifetime(); l > 0 {
		return l
	}
	return defaultLifetime
}

// fresh reports whether credentials found in the cache may be used as they
// are: more than W remains (or they never expire).
func fresh(c Credentials, now time.Time) bool {
	if !c.CanExpire() {
		return true
	}
	return c.Expires.Sub(now) > window(lifetimeOf(c))
}

// refreshAt is when this process re-mints; jitter is uniform in [0, 1).
func refreshAt(c Credentials, jitter float64) time.Time {
	if !c.CanExpire() {
		return time.Time{}
	}
	share := minJitterShare + (1-minJitterShare)*jitter
	return c.Expires.Add(-time.Duration(share * float64(window(lifetimeOf(c)))))
}

// finalLead is how long before a hard deadline the final mint happens:
// min(5 min, W/3), enough for an STS call and a retry or two while the
// source still signs.
func finalLead(lifetime time.Duration) time.Duration {
	return min(5*time.Minute, window(lifetime)/3)
}

// usable reports whether credentials may still sign a request: a small safety
// margin (min(10 s, lifetime/20)) covers the request's flight time.
func usable(c Credentials, now time.Time) bool {
	if !c.CanExpire() {
		return true
	}
	margin := min(10*time.Second, lifetimeOf(c)/20)
	return now.Before(c.Expires.Add(-margin))
}

// reportedExpiry is the Expiration handed to credential_process consumers:
// a few minutes early (min(5 min, lifetime/12)), because their SDK caches use
// credentials up to the reported instant with no window of their own.
func reportedExpiry(c Credentials) time.Time {
	if !c.CanExpire() {
		return time.Time{}
	}
	return c.Expires.Add(-min(5*time.Minute, lifetimeOf(c)/12))
}

// retryDelay is the wait after the n-th failed early refresh (n ≥ 1): 1 s
// doubling, capped at a tenth of the window and at one minute, so several
// attempts fit before the old credentials expire.
func retryDelay(n int, c Credentials) time.Duration {
	d := time.Second << min(n-1, 6)
	limit := min(time.Minute, max(time.Second/2, window(lifetimeOf(c))/10))
	return min(d, limit)
}

// warnLeads are how long before a hard deadline the broker warns: about 30
// and 5 minutes (docs/credentials.md 5.5), scaled down when the whole span from
// connect to the deadline is shorter.
func warnLeads(span time.Duration) []time.Duration {
	return []time.Duration{min(30*time.Minute, span/2), min(5*time.Minute, span/6)}
}
