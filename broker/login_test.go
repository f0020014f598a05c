package broker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// TestLoginStampsWithClock: Login verifies the key with STS, records the
// user's ARN, and stamps the key's creation with the injected clock.
func TestLoginStampsWithClock(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	k, err := Login(context.Background(), e.persistent, e.cacheDir, LoginOptions{Profile: "dev",
		Key:    SourceKey{AccessKeyID: e.ts.User.AccessKeyID, SecretAccessKey: e.ts.User.SecretAccessKey},
		Verify: true, Region: "us-east-1", STSEndpoint: e.ts.URL(), Clock: clock.NewFake(at)})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Created.Equal(at) || k.ARN != e.ts.User.ARN() {
		t.Fatalf("stored key created %v, ARN %q", k.Created, k.ARN)
	}
	it, err := e.persistent.Get(context.Background(), SourceItemKey("dev"))
	if err != nil {
		t.Fatal(err)
	}
	var stored SourceKey
	if err := json.Unmarshal(it.Data, &stored); err != nil || !stored.Created.Equal(at) {
		t.Fatalf("keyring item: %v %v", stored, err)
	}
}
