package broker

import (
	"context"

	"github.com/ssmproxy/ssmproxy/internal/lockfile"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// chain is the broker's credential chain (docs/credentials.md 5.1, 5.4), built
// the aws-vault way from small links, each an aws.CredentialsProvider with
// only the dependencies it needs and none on the Broker:
//
//	source → MFA session → role mint → shared cache
//
// sourceProvider reads the source (keyring key, environment, SDK profile);
// mfaProvider turns a long-term key into the MFA session kept in the
// keyring; roleProvider mints the scoped role credentials; cacheProvider
// serves the cache file and lets one process mint at a time. The Broker on
// top keeps what lives longer than one mint: the current credentials, the
// refresh timer, the deadline notices and Invalidate.
type chain struct {
	set    *settings
	stores *keyrings
	locks  *locker
	src    *sourceProvider
	mfa    *mfaProvider
	role   *roleProvider
	cache  *cacheProvider
}

// newChain chooses the source and links the chain. It makes no AWS call and
// reads no secret.
func newChain(ctx context.Context, o Options, set *settings, note *notifier) (*chain, error) {
	clk, log := o.Clock, o.Log
	stores := &keyrings{open: o.Keyring}
	codes := &mfaCodes{profile: set.profile, process: set.mfaProcess, prompter: o.Prompter}
	lockDir := o.LockDir
	if lockDir == "" {
		var err error
		if lockDir, err = lockfile.Dir(); err != nil {
			return nil, err
		}
	}
	// Choosing only lists keyring items; should a store ever ask while
	// opening, the terminal is not for it.
	s, err := (&chooser{set: set, stores: stores, codes: codes, clk: clk}).choose(prompt.WithoutTerminal(ctx))
	if err != nil {
		return nil, err
	}
	file, key := fileCache{dir: o.CacheDir}, set.cacheKey(s.fingerprint())
	locks := &locker{dir: lockDir, note: note}
	clients := stsClients{base: set.base, endpoint: o.STSEndpoint}
	src := &sourceProvider{src: s, profile: set.profile, clk: clk}
	mfa := &mfaProvider{src: src, codes: codes, stores: stores, locks: locks, sts: clients,
		serial: set.mfaSerial, duration: set.mfaDuration, clk: clk, log: log}
	role := &roleProvider{mfa: mfa, sts: clients, file: file, key: key, clk: clk, log: log, spec: roleSpec{
		profile: set.profile, region: set.region, arn: set.roleARN, externalID: set.externalID,
		sessionName: set.sessionName, duration: set.roleDuration, scope: set.scope, sourceIdentity: set.sourceIdentity}}
	sdk, isSDK := s.(*sdkSource)
	cache := &cacheProvider{role: role, file: file, key: key, locks: locks, deadline: s.deadline,
		cacheable: set.roleARN != "",
		early:     !isSDK || set.mfaSerial != "",
		lockWait:  roleLockTimeout, clk: clk, log: log}
	if isSDK && sdk.mayPrompt() {
		cache.lockWait = mfaLockTimeout
	}
	log.Debug("credential broker", "profile", set.profile, "source", s.describe(), "role", set.roleARN,
		"region", set.region, "target", set.scope.Target)
	return &chain{set: set, stores: stores, locks: locks, src: src, mfa: mfa, role: role, cache: cache}, nil
}
