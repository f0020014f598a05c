package broker

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// Every link of the chain is an aws.CredentialsProvider of its own.
var (
	_ aws.CredentialsProvider = (*sourceProvider)(nil)
	_ aws.CredentialsProvider = (*mfaProvider)(nil)
	_ aws.CredentialsProvider = (*roleProvider)(nil)
	_ aws.CredentialsProvider = (*cacheProvider)(nil)
	_ aws.CredentialsProvider = (*Broker)(nil)
)

// TestChainLinks: each link, used alone, hands over what its tier holds:
// the stored long-term key, the MFA session minted from it (GetSessionToken,
// kept in the keyring), scoped role credentials, and the same role
// credentials again from the cache file without another mint.
func TestChainLinks(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.loginWithMFA("default")
	b := e.newBroker()
	ctx := context.Background()
	c := b.chain

	src, err := c.src.Retrieve(ctx)
	if err != nil || src.AccessKeyID != e.ts.User.AccessKeyID || src.CanExpire {
		t.Fatalf("source link: %v %v", src.AccessKeyID, err)
	}
	mfa, err := c.mfa.Retrieve(ctx)
	if err != nil || !strings.HasPrefix(mfa.AccessKeyID, "ASIA") || e.sts("GetSessionToken") != 1 {
		t.Fatalf("MFA link: %v %v (GetSessionToken %d)", mfa.AccessKeyID, err, e.sts("GetSessionToken"))
	}
	if keys, _ := e.volatile.Keys(ctx); len(keys) != 1 || !strings.HasPrefix(keys[0], "mfa-session:default:") {
		t.Fatalf("the MFA session is not in the keyring: %v", keys)
	}
	role, err := c.role.Retrieve(ctx)
	if err != nil || role.AccessKeyID == mfa.AccessKeyID || e.sts("AssumeRole") != 1 || e.sts("GetSessionToken") != 1 {
		t.Fatalf("role link: %v (AssumeRole %d, GetSessionToken %d)", err, e.sts("AssumeRole"), e.sts("GetSessionToken"))
	}
	first, err := c.cache.Retrieve(ctx)
	if err != nil || e.sts("AssumeRole") != 2 {
		t.Fatalf("cache link, first: %v (AssumeRole %d)", err, e.sts("AssumeRole"))
	}
	again, err := c.cache.Retrieve(ctx)
	if err != nil || again.AccessKeyID != first.AccessKeyID || e.sts("AssumeRole") != 2 {
		t.Fatalf("cache link, again: %v (AssumeRole %d): not served from the file", err, e.sts("AssumeRole"))
	}
}
